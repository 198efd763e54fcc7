"""Every error a client can meet is JSON `{"error": {"code", "message"}}`; never a traceback."""
from __future__ import annotations

import logging

from apiflask import APIFlask, HTTPError
from flask import Response, current_app, request
from gunicorn.http.errors import ParseException
from redis.exceptions import RedisError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger(__name__)

# The page loads only its own files; /docs (Swagger UI) needs its inline bootstrap script.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


# What every error response looks like, for /openapi.json (replaces APIFlask's own error shape).
ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
}


def default_code(status: int) -> str:
    return HTTP_STATUS_CODES.get(status, "error").lower().replace(" ", "_").replace("-", "_")


def error_body(error: HTTPError) -> tuple[dict, int, dict]:
    extra = dict(error.extra_data or {})
    code = extra.pop("code", None) or default_code(error.status_code)
    message = error.message
    if error.status_code == 422 and error.detail:  # schema validation: say which field and why
        message = f"invalid request: {error.detail}"
    return {"error": {"code": code, "message": message}, **extra}, error.status_code, error.headers


def too_large(exc: RequestEntityTooLarge):
    """werkzeug raises the same error for too many bytes and for too many form parts: a request
    whose declared length is within the byte limit was refused for its parts."""
    limit, length = current_app.config["MAX_CONTENT_LENGTH"], request.content_length
    if length is not None and length <= limit:
        parts = current_app.config["MAX_FORM_PARTS"]
        message = f"the form has more than {parts:,} parts, the most one request may have"
        return {"error": {"code": "too_many_parts", "message": message}}, 413
    return {"error": {"code": "request_too_large", "message": f"the request is over the limit of {limit:,} bytes"}}, 413


def malformed(exc: ParseException):
    """A body whose framing is broken (a bad chunk size) shows only as the app reads it."""
    return {"error": {"code": "malformed_request", "message": f"the request is malformed: {exc}"}}, 400


def incomplete_body(exc: ClientDisconnected):
    """The body ended early, or stopped arriving for longer than the front waits."""
    message = "the request's body ended, or stopped arriving, before its declared length"
    return {"error": {"code": "incomplete_body", "message": message}}, 400


def redis_down(exc: RedisError):
    log.error("Redis unavailable: %s", exc)
    body = {"error": {"code": "unavailable", "message": "the job store is unreachable; try again shortly"}}
    return body, 503, {"Retry-After": "5"}


def unexpected(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return {"error": {"code": "internal_error", "message": "something went wrong on our side"}}, 500


def security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    csp = DOCS_CSP if request.path.startswith("/docs") else PAGE_CSP
    response.headers.setdefault("Content-Security-Policy", csp)
    return response


def register(app: APIFlask) -> None:
    app.config["HTTP_ERROR_SCHEMA"] = ERROR_SCHEMA
    app.config["VALIDATION_ERROR_SCHEMA"] = ERROR_SCHEMA
    app.error_processor(error_body)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(ParseException, malformed)
    app.register_error_handler(ClientDisconnected, incomplete_body)
    app.register_error_handler(RedisError, redis_down)
    app.register_error_handler(Exception, unexpected)
    app.after_request(security_headers)
