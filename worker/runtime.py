"""What a worker process holds while it serves, hung off its Celery app and reached with
`runtime(app)`: a Redis connection, the job store, an ONNX Runtime session, a heartbeat that says
the process is ready, and the sweeper that queues chunks that fell due (common/chunks.py).

Start-up, in order: the parent process checks that the model loads (a one-thread session, which
starts no threads, so forking after it is safe) and, if it cannot, reports why to Redis and stops
consuming: jobs wait in the queue instead of failing, and /ready shows the reason. Each pool
process then makes its own runtime after the fork and announces itself ready.
"""
from __future__ import annotations

import logging
import os
import resource
import socket
import threading
from typing import Callable

from celery import Celery, signals
from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError, RedisError, TimeoutError as RedisTimeoutError
from redis.retry import Retry

from common import workers
from common.jobs import JobStore
from common.queue import CELERY_QUEUE, enqueue, heavy_queue, queue_for, wake
from common.settings import Settings
from worker.classify import Batching
from worker.inference import Classifier, default_threads

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_classifier(settings: Settings, threads: int) -> Classifier:
    return Classifier(settings.model_path, str(settings.model_card_path), threads)


def keep_doing(action: Callable[[], None], stop: threading.Event) -> None:
    """Runs `action` every third of the heartbeat's lifetime in a daemon thread until `stop`."""
    def loop() -> None:
        while not stop.is_set():
            try:
                action()
            except Exception:  # Redis restarting: a heartbeat lapses meanwhile, and comes back with it
                log.warning("could not reach Redis", exc_info=True)
            stop.wait(workers.TTL_S / 3)
    threading.Thread(target=loop, daemon=True).start()


class Runtime:
    """One pool process's connection, job store and model session, and its background threads."""

    def __init__(self, app: Celery, settings: Settings):
        self.app, self.settings = app, settings
        # A Redis restart must make tasks wait, not fail their images: retry for about 4 minutes.
        self.redis = Redis.from_url(settings.redis_url, retry=Retry(ExponentialBackoff(cap=5, base=0.1), 60),
                                    retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self.jobs = JobStore.for_settings(self.redis, settings)
        threads = settings.worker_threads or default_threads(settings.processes)
        self.classifier = load_classifier(settings, threads)
        self.batching = Batching.for_settings(settings)
        log.info("%s loaded %s with %d threads", worker_id(), self.classifier.identity, threads)

    def start(self, stop: threading.Event) -> "Runtime":
        """The heartbeat that says this process serves, and the sweeper; both end with `stop`."""
        me = worker_id()
        keep_doing(lambda: workers.announce(self.redis, me, self.classifier.identity), stop)
        keep_doing(self.queue_due, stop)
        return self

    def queue_due(self) -> None:
        """Queues the pending chunks nobody queued (their web process died) or whose task was lost;
        a chunk the broker refuses stays pending and comes due again. Wakes the ready list if its
        wake-up was lost (common/chunks.py)."""
        queue = queue_for(self.classifier.card["name"])
        for job_id, chunk in self.jobs.chunks.claim_due():
            if not enqueue(self.app, self.jobs, job_id, [chunk], self.jobs.heavy_images(job_id), queue):
                log.warning("queued images %s of job %s, which were not queued or not finished in time", chunk, job_id)
        if self.jobs.chunks.stalled(queue):
            log.warning("chunks wait in %s with no task taking them: waking a worker", queue)
            wake(self.app, queue)


def limit_memory(extra_mb: int) -> None:
    """Caps this process's address space at what it holds now (model, runtime, threads) plus
    `extra_mb`: an image that needs more gets a MemoryError, which fails that image alone, instead
    of the kernel's OOM killer taking the host's processes. 0: no ceiling."""
    if extra_mb <= 0:
        return
    with open("/proc/self/statm") as statm:  # first field: the address space's size, in pages
        held = int(statm.read().split()[0]) * resource.getpagesize()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = held + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


class Lifecycle:
    """Connects a worker app to Celery's start-up and shutdown signals; holds its Runtime."""

    def __init__(self, app: Celery, settings: Settings):
        self.app, self.settings = app, settings
        self.model_problem: str | None = None
        self.current: Runtime | None = None
        self.stop = threading.Event()
        app.lifecycle = self

    def connect(self) -> None:
        signals.worker_init.connect(self.check_model, weak=False)
        signals.worker_ready.connect(self.stop_consuming_without_model, weak=False)
        signals.worker_process_init.connect(self.start_process, weak=False)
        signals.worker_process_shutdown.connect(self.shutdown, weak=False)

    def runtime(self) -> Runtime:
        if self.current is None:
            self.current = Runtime(self.app, self.settings).start(self.stop)
        return self.current

    def check_model(self, **_) -> None:
        try:
            del load_classifier(self.settings, threads=1).session
        except Exception as exc:
            self.model_problem = f"model failed to load: {exc}"
            log.error("%s; this worker takes no jobs until restarted with a working model", self.model_problem)
            redis, me, problem = Redis.from_url(self.settings.redis_url), worker_id(), self.model_problem
            keep_doing(lambda: workers.report_problem(redis, me, problem), self.stop)

    def stop_consuming_without_model(self, sender, **_) -> None:
        if self.model_problem:
            for queue in (CELERY_QUEUE, heavy_queue(CELERY_QUEUE)):
                sender.cancel_task_queue(queue)

    def start_process(self, **_) -> None:
        if not self.model_problem:
            self.runtime()
            limit_memory(self.settings.worker_memory_mb)

    def shutdown(self, **_) -> None:
        self.stop.set()
        if self.current is None:
            return
        # One quick try, not the runtime's minutes of retries: Redis may be gone at shutdown, and the
        # process's key lapses by itself anyway.
        redis = Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2,
                               retry=Retry(NoBackoff(), 0))
        try:
            workers.withdraw(redis, worker_id())
        except RedisError:
            log.warning("could not withdraw %s from Redis; its key lapses within %d s", worker_id(), workers.TTL_S)


def runtime(app: Celery) -> Runtime:
    """The calling process's runtime, made on first use (the solo and threads pools never fork)."""
    return app.lifecycle.runtime()
