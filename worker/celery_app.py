"""The worker's entry point: `celery -A worker.celery_app worker`.

The ONNX Runtime session is made in each worker process after the fork (never in the parent,
whose threads would not survive it), and the process announces itself ready only once its model
loaded; a model that fails to load is reported, and that process takes no tasks.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from celery import signals
from redis import Redis

from common import workers
from common.jobs import JobStore
from common.queue import make_celery
from common.settings import Settings
from worker.inference import Classifier, default_threads

settings = Settings.from_env()
app = make_celery(settings)
app.conf.include = ["worker.tasks"]
log = logging.getLogger(__name__)


class Runtime:
    """What one worker process holds: its Redis connection, job store and model session."""

    def __init__(self, processes: int):
        self.redis = Redis.from_url(settings.redis_url)
        self.store = JobStore(self.redis, settings.result_ttl_s)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        threads = settings.worker_threads or default_threads(processes)
        self.classifier = Classifier(settings.model_path, str(settings.model_card_path), threads)
        log.info("%s loaded %s with %d threads", self.worker_id, self.classifier.identity, threads)


runtime: Runtime | None = None


def _heartbeat(rt: Runtime, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            workers.announce(rt.redis, rt.worker_id, rt.classifier.identity)
        except Exception:  # Redis restarting: keep trying, the key simply lapses meanwhile
            log.warning("heartbeat to Redis failed", exc_info=True)
        stop.wait(workers.TTL_S / 3)


_stop = threading.Event()


@signals.worker_process_init.connect
def load_model(**_) -> None:
    global runtime
    processes = settings.worker_processes or os.cpu_count() or 1
    try:
        runtime = Runtime(processes)
    except Exception as exc:
        log.exception("the model could not be loaded")
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        workers.report_problem(Redis.from_url(settings.redis_url), worker_id, f"model failed to load: {exc}")
        raise
    threading.Thread(target=_heartbeat, args=(runtime, _stop), daemon=True).start()


@signals.worker_process_shutdown.connect
def unload(**_) -> None:
    _stop.set()
    if runtime is not None:
        workers.withdraw(runtime.redis, runtime.worker_id)
