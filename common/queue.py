"""The Celery app both sides agree on, and the one way work gets queued. The web process only
sends tasks by name, so it never imports the worker's code (nor onnxruntime); the worker
registers the task under that name."""
from __future__ import annotations

import logging

from celery import Celery
from redis.exceptions import RedisError

from common.jobs import JobStore
from common.settings import Settings
from common.webhooks import WEBHOOK_QUEUE, WEBHOOK_TASK

CLASSIFY_TASK = "worker.classify_images"
CELERY_QUEUE = "celery"  # Celery's default queue: in Redis a list, so its length is the backlog
SHADOW_TASK = "worker.shadow_images"
# The shipped model keeps Celery's default queue, so a deployment of one model (its compose health
# checks, its tools) sees no change; tests/test_models.py checks this is MODEL_PATH's default.
DEFAULT_MODEL = "sports100-lite0-int8@1.0.0"
log = logging.getLogger(__name__)


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


def queue_for(model: str) -> str:
    """The Celery queue of a model's chunks (a model id, name@version): workers that serve the
    model consume it, so a job's chunks reach only a worker with its model loaded."""
    return CELERY_QUEUE if model == DEFAULT_MODEL else f"{CELERY_QUEUE}.{model}"


def enqueue(celery: Celery, jobs: JobStore, job_id: str, chunks: list[list[int]],
            model: str = DEFAULT_MODEL) -> list[list[int]]:
    """Sends one task per pending chunk to `model`'s queue and marks the sent ones dispatched.
    Returns the chunks the broker refused (from the first refusal on): they stay pending, for the
    caller to fail or to leave for a worker to queue once due."""
    sent = 0
    for chunk in chunks:
        try:
            celery.send_task(CLASSIFY_TASK, args=[job_id, chunk], kwargs={"model": model}, queue=queue_for(model))
        except Exception:  # OperationalError mostly, but kombu has raised others mid-failure (issue 13)
            log.warning("job %s: the broker refused chunks %s", job_id, chunks[sent:], exc_info=True)
            break
        sent += 1
    try:
        jobs.chunks.dispatched(job_id, chunks[:sent])
    except RedisError:  # the chunks are queued: at worst a worker queues them again once due
        log.warning("job %s: could not mark its chunks queued", job_id, exc_info=True)
    return chunks[sent:]
