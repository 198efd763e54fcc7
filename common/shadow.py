"""Shadow runs: a share of jobs is also classified by a second model, whose answers no client
sees; only how often its top-1 agrees with the job's own model is kept, for an operator to read
before promoting it (GET /api/v1/models, `shadow`).

The web process keeps a copy of a sampled job's images (the job's own bytes go once its model
is done with them) and sends one shadow task per chunk to the shadow model's queue. The worker
compares once the job's images are final (worker/shadow.py) and counts in `models:shadow:<id>`.
"""
from __future__ import annotations

import logging

from celery import Celery
from redis import Redis

from common.queue import SHADOW_TASK, queue_for

PREFIX = "models:shadow:"
log = logging.getLogger(__name__)


def image_key(job_id: str, index: int) -> str:
    return f"shadow:{job_id}:image:{index}"


def keep_copies(redis: Redis, job_id: str, images: dict[int, bytes], ttl_s: int) -> None:
    """Copies of the images for the shadow model, expiring with the job if no shadow task comes."""
    with redis.pipeline(transaction=False) as pipe:
        for index, data in images.items():
            pipe.set(image_key(job_id, index), data, ex=ttl_s)
        pipe.execute()


def send(celery: Celery, job_id: str, chunks: list[list[int]], shadow: str) -> None:
    """Queues the shadow tasks; a refusal costs only the comparison, never the client's job."""
    try:
        for chunk in chunks:
            celery.send_task(SHADOW_TASK, args=[job_id, chunk], kwargs={"model": shadow},
                             queue=queue_for(shadow))
    except Exception:
        log.warning("job %s: shadow tasks for %s not queued", job_id, shadow, exc_info=True)


def record(redis: Redis, shadow: str, compared: int, agreed: int) -> None:
    with redis.pipeline() as pipe:
        pipe.hincrby(PREFIX + shadow, "compared", compared)
        pipe.hincrby(PREFIX + shadow, "agreed", agreed)
        pipe.execute()


def reset(redis: Redis, shadow: str) -> None:
    """A new shadow setting starts counting afresh."""
    redis.delete(PREFIX + shadow)


def agreement(redis: Redis, shadow: str) -> dict:
    """Images the shadow model classified alongside a job's own model, and how many it agreed on
    (same top-1); `agreement` is their ratio (None before the first). For /api/v1/models and the
    metrics endpoint."""
    counts = redis.hgetall(PREFIX + shadow)
    compared, agreed = int(counts.get(b"compared", 0)), int(counts.get(b"agreed", 0))
    return {"compared": compared, "agreed": agreed, "agreement": round(agreed / compared, 4) if compared else None}


def agreements(redis: Redis) -> dict[str, dict]:
    """`agreement` for every model that has been a shadow since its counts were last reset, by id."""
    keys = sorted(key.decode() for key in redis.scan_iter(match=PREFIX + "*", count=1000))
    return {key.removeprefix(PREFIX): agreement(redis, key.removeprefix(PREFIX)) for key in keys}
