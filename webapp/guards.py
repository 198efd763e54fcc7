"""What stands between a client and the queue: an optional API key, a per-client rate limit kept in
Redis (so it holds across web processes and hosts), and back-pressure when the queue is too deep."""
from __future__ import annotations

import hmac
import math
import time
from functools import wraps

from apiflask import APIFlask
from flask import current_app, request
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from common.error_codes import ErrorCode
from common.queue import CELERY_QUEUE
from webapp.errors import fail

API_KEY_HEADER = "X-API-Key"
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
        fail(ErrorCode.UNAUTHORIZED, f"a valid {API_KEY_HEADER} header is required to submit images")


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
    """Queued work is bounded twice: by batches waiting, and by the memory their images take."""
    settings, redis = current_app.extensions["settings"], current_app.extensions["redis"]
    depth = redis.llen(CELERY_QUEUE)
    used_mb = redis.info("memory")["used_memory"] / 2**20
    if depth >= settings.max_queue_depth or used_mb >= settings.max_redis_mb:
        message = f"the service is busy ({depth} batches, {used_mb:.0f} MB waiting); try again shortly"
        fail(ErrorCode.OVERLOADED, message, headers={"Retry-After": "10"})


def submission(view):
    """For endpoints that accept images: key first, then the client's rate, then the backlog."""
    @wraps(view)
    def guarded(*args, **kwargs):
        _check_api_key()
        _check_rate()
        _check_backlog()
        return view(*args, **kwargs)
    return guarded
