"""The worker's entry point: `celery -A worker.celery_app worker`.

Start-up, in order: the parent process checks that the model loads (a one-thread session, which
starts no threads, so forking after it is safe) and, if it cannot, reports why to Redis and stops
consuming: jobs wait in the queue instead of failing, and /ready shows the reason. Each pool
process then makes its own ONNX Runtime session after the fork and announces itself ready.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from celery import signals
from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError, RedisError, TimeoutError as RedisTimeoutError
from redis.retry import Retry

from common import workers
from common.jobs import JobStore
from common.queue import CELERY_QUEUE, CLASSIFY_TASK, make_celery
from common.settings import Settings
from worker.inference import Classifier, default_threads

settings = Settings.from_env()
app = make_celery(settings)
app.conf.include = ["worker.tasks"]
log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_classifier(threads: int) -> Classifier:
    return Classifier(settings.model_path, str(settings.model_card_path), threads)


class Runtime:
    """What one pool process holds: its Redis connection, job store and model session."""

    def __init__(self, processes: int):
        # A Redis restart must make tasks wait, not fail their images: retry for about 4 minutes.
        self.redis = Redis.from_url(settings.redis_url, retry=Retry(ExponentialBackoff(cap=5, base=0.1), 60),
                                    retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self.store = JobStore(self.redis, settings.result_ttl_s, settings.dispatch_grace_s,
                              settings.requeue_after_s)
        threads = settings.worker_threads or default_threads(processes)
        self.classifier = load_classifier(threads)
        log.info("%s loaded %s with %d threads", worker_id(), self.classifier.identity, threads)


runtime: Runtime | None = None
model_problem: str | None = None
_stop = threading.Event()


def _keep_saying(say, stop: threading.Event) -> None:
    """Refreshes a short-lived key until stopped, so it lapses by itself if this process dies."""
    while not stop.is_set():
        try:
            say()
        except Exception:  # Redis restarting: the key lapses meanwhile, and comes back with it
            log.warning("could not reach Redis", exc_info=True)
        stop.wait(workers.TTL_S / 3)


def _in_background(say) -> None:
    threading.Thread(target=_keep_saying, args=(say, _stop), daemon=True).start()


@signals.worker_init.connect
def check_model(**_) -> None:
    global model_problem
    try:
        del load_classifier(threads=1).session
    except Exception as exc:
        model_problem = f"model failed to load: {exc}"
        log.error("%s; this worker takes no jobs until restarted with a working model", model_problem)
        redis, me = Redis.from_url(settings.redis_url), worker_id()
        _in_background(lambda: workers.report_problem(redis, me, model_problem))


@signals.worker_ready.connect
def stop_consuming_without_model(sender, **_) -> None:
    if model_problem:
        sender.cancel_task_queue(CELERY_QUEUE)


def queue_due(store: JobStore) -> None:
    """Queues the pending chunks nobody queued (their web process died) or whose task was lost
    (see common/jobs.py)."""
    for job_id, chunk in store.claim_due():
        app.send_task(CLASSIFY_TASK, args=[job_id, chunk])
        store.dispatched(job_id, [chunk])
        log.warning("queued images %s of job %s, which were not queued or not finished in time", chunk, job_id)


def start_runtime() -> Runtime:
    global runtime
    runtime = Runtime(settings.processes)
    me = worker_id()
    _in_background(lambda: workers.announce(runtime.redis, me, runtime.classifier.identity))
    _in_background(lambda: queue_due(runtime.store))
    return runtime


@signals.worker_process_init.connect
def load_model(**_) -> None:
    if not model_problem:
        start_runtime()


@signals.worker_process_shutdown.connect
def unload(**_) -> None:
    _stop.set()
    if runtime is None:
        return
    # One quick try, not runtime.redis's minutes of retries: Redis may be gone at shutdown, and the
    # worker's key lapses by itself anyway.
    redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        workers.withdraw(redis, worker_id())
    except RedisError:
        log.warning("could not withdraw %s from Redis; its key lapses within %d s", worker_id(), workers.TTL_S)
