"""The Celery app both sides agree on, and the one way work gets queued. The web process only
sends tasks by name, so it never imports the worker's code (nor onnxruntime); the worker
registers the task under that name.

Two queues per model: light chunks on `queue_for(model)`, which workers batch across jobs
(worker/classify.py), and chunks of one heavy image on `heavy_queue(...)`, each run alone. A worker
consumes both unless told otherwise (`-Q`/`-X`); `make run` and compose give the heavy queue a
worker process of its own, so heavy images never hold every process while light jobs wait."""
from __future__ import annotations

import logging
from collections.abc import Collection

from celery import Celery
from redis.client import Pipeline
from redis.exceptions import RedisError

from common.chunks import ready_key
from common.jobs import JobStore
from common.settings import Settings
from common.webhooks import WEBHOOK_QUEUE, WEBHOOK_TASK

CLASSIFY_TASK = "worker.classify_images"  # one chunk, alone: (job id, indices), model=
DRAIN_TASK = "worker.classify_waiting"  # a wake-up: classify the queue's ready chunks in batches, model=
SHADOW_TASK = "worker.shadow_images"
CELERY_QUEUE = "celery"  # Celery's default queue; it holds wake-ups, the backlog is what `waiting` counts
# The shipped model keeps Celery's default queue, so a deployment of one model (its compose health
# checks, its tools) sees no change; tests/test_models.py checks this is MODEL_PATH's default.
DEFAULT_MODEL = "sports100-lite0-fused-int8@2.1.0"
log = logging.getLogger(__name__)


def queue_for(model: str) -> str:
    """The queue of a model's light chunks (a model id, name@version): workers that serve the
    model consume it, so a job's chunks reach only a worker with its model loaded."""
    return CELERY_QUEUE if model == DEFAULT_MODEL else f"{CELERY_QUEUE}.{model}"


HEAVY_SUFFIX = ".heavy"


def heavy_queue(queue: str) -> str:
    """The queue of the chunks of `queue`'s model that hold one heavy image each."""
    return queue + HEAVY_SUFFIX


def make_celery(settings: Settings) -> Celery:
    celery = Celery("sports", broker=settings.redis_url)
    celery.conf.update(
        # JSON only: a pickled message from anyone who can reach Redis would be code execution.
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in the job record, not in Celery's backend
        # Acknowledge after the work is written, and requeue a task whose worker died mid-way,
        # so an accepted image is never lost; one task reserved at a time keeps that promise cheap.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A chunk that stalls is killed and put back (not acknowledged); the job store counts its
        # attempts and fails its images after a few, so a poisonous image cannot loop forever.
        task_time_limit=settings.task_time_limit_s,
        task_acks_on_timeout=False,
        task_default_queue=CELERY_QUEUE,
        # Webhook calls wait on other people's servers: their own queue, served by its own worker.
        task_routes={WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE}},
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for abandoned tasks often (kombu's default sweep is every ~100 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_concurrency=settings.processes,
        worker_hijack_root_logger=False,
    )
    return celery


def enqueue(celery: Celery, jobs: JobStore, job_id: str, chunks: list[list[int]], heavy: Collection[int] = (),
            model: str = DEFAULT_MODEL, wake_due: bool | None = None) -> list[list[int]]:
    """Queues pending chunks on `model`'s queues and marks the queued ones dispatched: a chunk with
    a `heavy` image as a task of its own on the heavy queue, to run alone; the others listed ready
    to batch (unless the caller listed them already, and says whether a wake-up is due), with a
    wake-up if the list was empty and no task lingers on it (common/chunks.py). Returns the chunks
    the broker refused (from the first refusal on): they stay pending, for the caller to fail or to
    leave for a worker to queue once due."""
    queue = queue_for(model)
    light = [c for c in chunks if not set(c) & set(heavy)]
    alone = [c for c in chunks if c not in light]
    scheduled = wake_due is not None  # listed with their job, and scheduled as queued then
    if not scheduled:
        wake_due = jobs.chunks.make_ready(queue, job_id, light)
    wake = [(DRAIN_TASK, [queue], queue)] if light and wake_due else []
    sent = _send(celery, job_id, model, wake + [(CLASSIFY_TASK, [job_id, c], heavy_queue(queue)) for c in alone])
    queued = (light if sent >= len(wake) else []) + alone[:max(0, sent - len(wake))]
    try:
        jobs.chunks.dispatched(job_id, [c for c in queued if not (scheduled and c in light)])
    except RedisError:  # the chunks are queued: at worst a worker queues them again once due
        log.warning("job %s: could not mark its chunks queued", job_id, exc_info=True)
    return [c for c in chunks if c not in queued]


def waiting(pipe: Pipeline, queue: str) -> None:
    """Adds to `pipe` the two counts of chunks waiting for a worker in `queue` (the backlog is
    their sum): light ones listed to batch, heavy ones queued alone."""
    pipe.llen(backlog_key(queue))
    pipe.llen(backlog_key(heavy_queue(queue)))


def backlog_key(queue: str) -> str:
    """The Redis list whose length is `queue`'s backlog: a light queue's ready list (its Celery list
    holds only wake-ups), any other queue's own list (a heavy image's tasks, webhook calls)."""
    return queue if queue.endswith(HEAVY_SUFFIX) or queue == WEBHOOK_QUEUE else ready_key(queue)


def wake(celery: Celery, model: str) -> bool:
    """Sends a wake-up to `model`'s workers: a task that classifies its queue's ready chunks."""
    queue = queue_for(model)
    return _send(celery, "-", model, [(DRAIN_TASK, [queue], queue)]) == 1


def _send(celery: Celery, job_id: str, model: str, messages: list[tuple[str, list, str]]) -> int:
    """Sends (task, args, queue) messages for `model` in order until the broker refuses one; how many went."""
    for sent, (task, args, queue) in enumerate(messages):
        try:
            celery.send_task(task, args=args, kwargs={"model": model}, queue=queue)
        except Exception:  # OperationalError mostly, but kombu has raised others mid-failure (issue 13)
            log.warning("job %s: the broker refused %s%s", job_id, task, args, exc_info=True)
            return sent
    return len(messages)
