"""The worker: a Celery app that classifies chunks of jobs with an ONNX Runtime model.

`create_worker(settings)` builds it; `worker/celery_app.py` is the entry point that Celery's
command line loads. Per-process state (the model session, heartbeats, the sweeper) is the
runtime's (worker/runtime.py), made after the pool forks, never at import.
"""
from __future__ import annotations

from celery import Celery, signals
from kombu import Exchange, Queue

from common import logs
from common.queue import make_celery
from common.settings import Settings
from worker import metrics
from worker.runtime import Lifecycle


def create_worker(settings: Settings) -> Celery:
    app = make_celery(settings)
    metrics.init(app, settings)
    # Celery configures no logging of its own once this signal has a receiver: its lines and ours
    # share one handler in LOG_FORMAT (common/logs.py).
    signals.setup_logging.connect(lambda loglevel=None, **_: logs.configure(settings.log_format, loglevel or "INFO"),
                                  weak=False)
    app.conf.include = ["worker.tasks", "worker.shadow_tasks", "worker.webhooks"]
    lifecycle = Lifecycle(app, settings)
    # Its models' queues, declared as Celery declares a queue a task is sent to (`-Q` overrides).
    app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in lifecycle.queues()]
    lifecycle.connect()
    return app
