"""What stands between a client and the queue: an optional API key, a per-client rate limit kept in
Redis (so it holds across web processes and hosts), and back-pressure when the queue is too deep."""
from __future__ import annotations

import hmac
from functools import wraps

from apiflask import APIFlask, abort
from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from common.queue import CELERY_QUEUE

API_KEY_HEADER = "X-API-Key"
SECURITY_SCHEMES = {"ApiKeyAuth": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}}

limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


def init_app(app: APIFlask) -> None:
    settings = app.extensions["settings"]
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url
    app.config["RATELIMIT_ENABLED"] = bool(settings.rate_limit)
    app.config["SECURITY_SCHEMES"] = SECURITY_SCHEMES
    limiter.init_app(app)


def _rate_limit() -> str:
    return current_app.extensions["settings"].rate_limit or "1000000/second"


def _check_api_key() -> None:
    expected = current_app.extensions["settings"].api_key
    given = request.headers.get(API_KEY_HEADER, "")
    if expected and not hmac.compare_digest(given.encode(), expected.encode()):
        abort(401, f"a valid {API_KEY_HEADER} header is required to submit images", extra_data={"code": "unauthorized"})


def _check_backlog() -> None:
    """Queued work is bounded twice: by batches waiting, and by the memory their images take."""
    settings, redis = current_app.extensions["settings"], current_app.extensions["redis"]
    depth = redis.llen(CELERY_QUEUE)
    used_mb = redis.info("memory")["used_memory"] / 2**20
    if depth >= settings.max_queue_depth or used_mb >= settings.max_redis_mb:
        abort(503, f"the service is busy ({depth} batches, {used_mb:.0f} MB waiting); try again shortly",
              headers={"Retry-After": "10"}, extra_data={"code": "overloaded"})


def submission(view):
    """For endpoints that accept images: key first, then the client's rate, then the backlog."""
    @limiter.limit(_rate_limit)
    @wraps(view)
    def guarded(*args, **kwargs):
        _check_api_key()
        _check_backlog()
        return view(*args, **kwargs)
    return guarded
