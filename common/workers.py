"""Which workers are alive with a model loaded: each worker process keeps a short-lived key
fresh while it can serve, so a dead or stuck worker drops out by itself within `TTL_S`."""
from __future__ import annotations

import json

from redis import Redis

PREFIX = "worker:ready:"
TTL_S = 30
PROBLEM_PREFIX = "worker:problem:"


def announce(redis: Redis, worker_id: str, model: dict, models: list[str] = ()) -> None:
    """`model`: the first model it serves; `models`: the ids (name@version) of all it serves."""
    record = {"worker": worker_id, "model": model, "models": list(models)}
    redis.set(PREFIX + worker_id, json.dumps(record), ex=TTL_S)
    redis.delete(PROBLEM_PREFIX + worker_id)


def report_problem(redis: Redis, worker_id: str, message: str) -> None:
    """A worker that cannot serve says why, so /ready can tell operators instead of jobs waiting silently."""
    redis.set(PROBLEM_PREFIX + worker_id, json.dumps({"worker": worker_id, "problem": message}), ex=TTL_S)


def withdraw(redis: Redis, worker_id: str) -> None:
    redis.delete(PREFIX + worker_id)


def _read(redis: Redis, prefix: str) -> list[dict]:
    keys = sorted(redis.scan_iter(match=prefix + "*", count=1000))
    return [json.loads(v) for v in redis.mget(keys) if v is not None] if keys else []


def ready_workers(redis: Redis) -> list[dict]:
    return _read(redis, PREFIX)


def worker_problems(redis: Redis) -> list[dict]:
    return _read(redis, PROBLEM_PREFIX)


def serving(redis: Redis) -> dict[str, int]:
    """How many worker processes serve each model id, from their heartbeats."""
    counts: dict[str, int] = {}
    for worker in ready_workers(redis):
        for model in worker.get("models") or [f"{worker['model']['name']}@{worker['model']['version']}"]:
            counts[model] = counts.get(model, 0) + 1
    return counts
