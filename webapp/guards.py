"""What stands between a client and the queue: an optional API key, a per-client rate limit kept in
Redis (so it holds across web processes and hosts), back-pressure when the queue is too deep, and
a cap on the long polls one client may hold at once."""
from __future__ import annotations

import hmac
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps

from apiflask import APIFlask
from flask import current_app, g, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from common import routing
from common.error_codes import ErrorCode
from common.queue import queue_for, waiting
from webapp.errors import fail

API_KEY_HEADER = "X-API-Key"
REFUSAL_STANDS_S = 1.0  # a reading of Redis memory over the limit is reused this long
LONG_POLL_SLACK_S = 5  # a long-poll slot lapses this long after its poll's wait would have ended
SECURITY_SCHEMES = {"ApiKeyAuth": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}}
# What `submission` can answer (UNAVAILABLE: Redis unreachable).
GUARD_ERRORS = (ErrorCode.UNAUTHORIZED, ErrorCode.TOO_MANY_REQUESTS, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE)


def init_app(app: APIFlask) -> None:
    settings = app.extensions["settings"]
    app.config["SECURITY_SCHEMES"] = SECURITY_SCHEMES
    if settings.rate_limit:  # each app its own limiter: its own Redis, its own limit
        app.extensions["rate_limiter"] = (MovingWindowRateLimiter(storage_from_string(settings.redis_url)),
                                          parse(settings.rate_limit))


def _check_api_key() -> None:
    expected = current_app.extensions["settings"].api_key
    given = request.headers.get(API_KEY_HEADER, "")
    if expected and not hmac.compare_digest(given.encode(), expected.encode()):
        fail(ErrorCode.UNAUTHORIZED, f"a valid {API_KEY_HEADER} header is required for this request")


def admin(view):
    """For operators' changes, before the body is read: they need the key, and with none
    configured they are refused rather than open to anyone."""
    @wraps(view)
    def guarded(*args, **kwargs):
        if not current_app.extensions["settings"].api_key:
            fail(ErrorCode.ROUTING_LOCKED, "set API_KEY on the service, and send it as "
                 f"{API_KEY_HEADER}, to change the model routing")
        _check_api_key()
        return view(*args, **kwargs)
    return guarded


def _check_rate() -> None:
    if "rate_limiter" not in current_app.extensions:
        return
    limiter, limit = current_app.extensions["rate_limiter"]
    client = request.remote_addr or "unknown"
    if not limiter.hit(limit, "submissions", client):
        retry_after = max(1, math.ceil(limiter.get_window_stats(limit, "submissions", client).reset_time - time.time()))
        fail(ErrorCode.TOO_MANY_REQUESTS, f"too many submissions from {client}: the limit is {limit}",
             headers={"Retry-After": str(retry_after)})


def _check_backlog() -> None:
    """Queued work is bounded twice: by batches waiting, and by the memory their images take.
    Both readings come in one round trip, with the routing the new job will be routed by."""
    settings, redis = current_app.extensions["settings"], current_app.extensions["redis"]
    standing, models = _refusal_standing(), current_app.extensions["models"]
    with redis.pipeline(transaction=False) as pipe:  # every model's queues: one backlog, one limit
        for model in models:
            waiting(pipe, queue_for(model))
        pipe.hgetall(routing.KEY)
        if standing is None:
            pipe.info("memory")
        answers = pipe.execute()
    remember_routing(answers[2 * len(models)])
    depth = sum(answers[:2 * len(models)])
    used, limit = standing or _redis_memory(answers[-1])
    if depth >= settings.max_queue_depth or used >= limit:
        message = f"the service is busy ({depth} batches, {used / 2**20:.0f} MB waiting); try again shortly"
        fail(ErrorCode.OVERLOADED, message, headers={"Retry-After": "10"})


def remember_routing(stored: dict[bytes, bytes]) -> routing.Routing:
    """Keeps the routing just read from Redis (its hash's fields) for the rest of the request, with
    when it was read: webapp/models.current answers from it while it is fresh."""
    g.routing, g.routing_read_at = routing.parse(stored, current_app.extensions["routing"]), time.monotonic()
    return g.routing


def _refusal_standing() -> tuple[int, float] | None:
    """A reading over the limit stands for a moment, so a flood of refused submissions costs no
    INFO each; otherwise None, and the memory is read afresh, so accepted ones cannot overshoot
    on a stale reading."""
    over = current_app.extensions.get("redis_over_limit")
    return (over[1], over[2]) if over and time.monotonic() - over[0] < REFUSAL_STANDS_S else None


def _redis_memory(info: dict) -> tuple[int, float]:
    """Redis's memory in use and the most submissions may fill (a share of its maxmemory, or
    MAX_REDIS_MB when it has none), in bytes, from INFO memory."""
    settings, extensions = current_app.extensions["settings"], current_app.extensions
    used, maxmemory = info["used_memory"], info["maxmemory"]
    limit = maxmemory * settings.redis_memory_share if maxmemory else settings.max_redis_mb * 2**20
    extensions["redis_over_limit"] = (time.monotonic(), used, limit) if used >= limit else None
    return used, limit


def submission(view):
    """For endpoints that accept images: key first, then the client's rate, then the backlog."""
    @wraps(view)
    def guarded(*args, **kwargs):
        _check_api_key()
        _check_rate()
        _check_backlog()
        return view(*args, **kwargs)
    return guarded


@contextmanager
def long_poll_slot(wait_s: float) -> Iterator[None]:
    """Holds one of the client's long-poll slots while its poll waits, or answers 429 if it has none
    left. The slots live in Redis (a sorted set per client, scored by when each poll ends at the
    latest), so the cap holds across web processes, and a slot whose process died frees itself."""
    settings, redis = current_app.extensions["settings"], current_app.extensions["redis"]
    client = request.remote_addr or "unknown"
    key, slot, now = f"long_polls:{client}", uuid.uuid4().hex, time.time()
    with redis.pipeline() as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {slot: now + wait_s + LONG_POLL_SLACK_S})
        for only in ("nx", "gt"):  # the key outlives its longest slot, never shortened by a shorter poll
            pipe.expire(key, math.ceil(wait_s) + LONG_POLL_SLACK_S, **{only: True})
        pipe.zcard(key)
        held = pipe.execute()[-1]
    try:
        if held > settings.max_long_polls_per_client:
            fail(ErrorCode.TOO_MANY_LONG_POLLS, f"{client} already holds {settings.max_long_polls_per_client} long "
                 "polls (?wait=), the most one client may; wait for one to answer, or poll without wait",
                 headers={"Retry-After": "5"})
        yield
    finally:
        redis.zrem(key, slot)
