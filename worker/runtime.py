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
from common.queue import DEFAULT_MODEL, enqueue, heavy_queue, queue_for, wake
from common.registry import ModelEntry, model_id, publish, served_models
from common.settings import Settings
from common.webhooks import Callbacks
from worker.classify import Batching
from worker.inference import Classifier, default_threads

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_classifiers(models: list[ModelEntry], threads: int) -> dict[str, Classifier]:
    """A session for each model this worker serves, by model id."""
    return {model.id: Classifier(str(model.model_path), str(model.card_path), threads) for model in models}


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

    def __init__(self, app: Celery, settings: Settings, models: list[ModelEntry]):
        self.app, self.settings, self.models = app, settings, models
        # A Redis restart must make tasks wait, not fail their images: retry for about 4 minutes.
        self.redis = Redis.from_url(settings.redis_url, retry=Retry(ExponentialBackoff(cap=5, base=0.1), 60),
                                    retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self.jobs = JobStore.for_settings(self.redis, settings)
        # The worker that closes a job with a callback_url queues its delivery (common/webhooks.py).
        self.callbacks = Callbacks(self.redis, app, settings)
        self.jobs.on_callback_due = self.callbacks.queue
        threads = settings.worker_threads or default_threads(settings.processes)
        self.classifiers = load_classifiers(models, threads)
        self.classifier = next(iter(self.classifiers.values()))  # the first: for a task that names no model
        self.batching = Batching.for_settings(settings)
        log.info("%s loaded %s with %d threads", worker_id(), list(self.classifiers), threads)

    def classifier_for(self, model: str | None) -> Classifier:
        return self.classifiers.get(model, self.classifier)

    def start(self, stop: threading.Event) -> "Runtime":
        """The heartbeat that says this process serves, and the sweeper; both end with `stop`."""
        keep_doing(self.announce, stop)
        keep_doing(self.queue_due, stop)
        keep_doing(self.callbacks.sweep, stop)
        return self

    def announce(self) -> None:
        """The heartbeat: this process serves these models, whose cards every web process may read."""
        workers.announce(self.redis, worker_id(), self.classifier.identity, list(self.classifiers))
        publish(self.redis, self.models)

    def queue_due(self) -> None:
        """Queues the pending chunks nobody queued (their web process died) or whose task was lost;
        a chunk the broker refuses stays pending and comes due again. Wakes a ready list of this
        worker's models whose wake-up was lost (common/chunks.py)."""
        for job_id, chunk in self.jobs.chunks.claim_due():
            model = self.jobs.model_of(job_id)  # the job's own model's queue, whichever this worker serves
            heavy = self.jobs.heavy_images(job_id)
            if not enqueue(self.app, self.jobs, job_id, [chunk], heavy, model_id(model) if model else DEFAULT_MODEL):
                log.warning("queued images %s of job %s, which were not queued or not finished in time", chunk, job_id)
        for model in self.classifiers:
            if self.jobs.chunks.stalled(queue_for(model)):
                log.warning("chunks wait for %s with no task taking them: waking a worker", model)
                wake(self.app, model)


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
        try:
            self.models = served_models(settings)
        except (OSError, ValueError, KeyError) as exc:
            self.models, self.model_problem = [], f"models not found: {exc}"
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
            self.current = Runtime(self.app, self.settings, self.models).start(self.stop)
        return self.current

    def queues(self) -> list[str]:
        """The queues this worker consumes: each of its models' two (light and heavy: common/queue.py),
        Celery's default ones while it has none."""
        light = [queue_for(model.id) for model in self.models] or [queue_for(DEFAULT_MODEL)]
        return [name for queue in light for name in (queue, heavy_queue(queue))]

    def check_model(self, **_) -> None:
        self.model_problem = self.model_problem or self.load_problem()
        if self.model_problem:
            log.error("%s; this worker takes no jobs until restarted with a working model", self.model_problem)
            redis, me, problem = Redis.from_url(self.settings.redis_url), worker_id(), self.model_problem
            keep_doing(lambda: workers.report_problem(redis, me, problem), self.stop)

    def load_problem(self) -> str | None:
        """Why a model of this worker does not load (each tried with a one-thread session), or None."""
        try:
            for classifier in load_classifiers(self.models, threads=1).values():
                del classifier.session
        except Exception as exc:
            return f"model failed to load: {exc}"
        return None

    def stop_consuming_without_model(self, sender, **_) -> None:
        if self.model_problem:
            for queue in self.queues():
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
