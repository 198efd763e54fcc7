"""Every error a client can meet is JSON `{"error": {"code", "message"}}`; never a traceback."""
from __future__ import annotations

import logging
from typing import NoReturn

from apiflask import APIFlask, HTTPError, abort
from flask import Response, current_app, request
from gunicorn.http.errors import ParseException
from redis.exceptions import RedisError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout

from common.error_codes import ErrorCode

log = logging.getLogger(__name__)

# The page loads only its own files; /docs (Swagger UI) needs its inline bootstrap script.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def fail(code: ErrorCode, message: str, headers: dict | None = None, **extra) -> NoReturn:
    """Answers the request with `code`'s status and `{"error": {"code", "message"}, **extra}`."""
    abort(code.status, message, headers=headers, extra_data={"code": code, **extra})


# Where webargs found a field that failed validation, as a client would name it.
WHERE = {"query": "query parameter", "json": "field", "form": "form field", "files": "part", "headers": "header"}
WHOLE = "_schema"  # marshmallow's name for the value as a whole (a JSON body that is no object)


def error_body(error: HTTPError) -> tuple[dict, int, dict]:
    extra = dict(error.extra_data or {})
    code = extra.pop("code", None)
    message = error.message if code else generic_message(error)
    body = {"error": {"code": code or ErrorCode.for_status(error.status_code), "message": message}, **extra}
    return body, error.status_code, error.headers


def generic_message(error: HTTPError) -> str:
    """What an error raised without a code of ours (Werkzeug's routing, a schema) says: the
    request's own part that was wrong, rather than the status's name."""
    if error.status_code == 422 and error.detail:  # schema validation: which field, and why
        return "invalid request: " + "; ".join(
            f"{_field(location, name)}: {' '.join(map(str, problems)).rstrip('.')}"
            for location, fields in error.detail.items() for name, problems in _flat(fields))
    if error.status_code == 405:
        allowed = [m for m in (error.headers or {}).get("Allow", "").split(", ") if m not in ("", "HEAD", "OPTIONS")]
        if allowed:
            return f"{request.path} does not take {request.method}; it takes {' or '.join(allowed)}"
    if error.status_code == 404:
        return f"nothing at {request.path} (GET /docs lists the API's URLs)"
    return error.message


def _flat(problems, name: str = ""):
    """(dotted name, [problems]) for each field of a webargs error, nested ones included."""
    if not isinstance(problems, dict):
        yield name, problems
        return
    for key, inner in problems.items():
        yield from _flat(inner, f"{name}.{key}" if name else str(key))


def _field(location: str, name: str) -> str:
    if name in ("", WHOLE):
        return "the JSON body" if location == "json" else f"the {location}"
    return f"{WHERE.get(location, location)} '{name}'"


def too_large(exc: RequestEntityTooLarge):
    """werkzeug raises the same error for too many bytes and for too many form parts: a request
    whose declared length is within the byte limit was refused for its parts."""
    limit, length = current_app.config["MAX_CONTENT_LENGTH"], request.content_length
    if length is not None and length <= limit:
        parts = current_app.config["MAX_FORM_PARTS"]
        return _body(ErrorCode.TOO_MANY_PARTS, f"the form has more than {parts:,} parts, the most one request may have")
    return _body(ErrorCode.REQUEST_TOO_LARGE, f"the request is over the limit of {limit:,} bytes")


def malformed(exc: ParseException):
    """A body whose framing is broken (a bad chunk size) shows only as the app reads it."""
    return _body(ErrorCode.MALFORMED_REQUEST, f"the request is malformed: {exc}")


def incomplete_body(exc: ClientDisconnected):
    """The body ended early, or stopped arriving for longer than the front waits."""
    return _body(ErrorCode.INCOMPLETE_BODY, "the request's body ended, or stopped arriving, before its declared length")


class UploadTooSlow(RequestTimeout):
    """The front's answer to a body still arriving at WEB_BODY_DEADLINE_S (webapp/gunicorn_conf.py);
    not an OSError, which Werkzeug would take for a disconnect."""


def upload_too_slow(exc: UploadTooSlow):
    seconds = current_app.extensions["settings"].web_body_deadline_s
    return _body(ErrorCode.UPLOAD_TOO_SLOW, f"the request's body did not arrive in full within {seconds} s")


def _body(code: ErrorCode, message: str) -> tuple[dict, int]:
    return {"error": {"code": code, "message": message}}, code.status


def redis_down(exc: RedisError):
    log.error("Redis unavailable: %s", exc)
    body = {"error": {"code": ErrorCode.UNAVAILABLE, "message": "the job store is unreachable; try again shortly"}}
    return body, ErrorCode.UNAVAILABLE.status, {"Retry-After": "5"}


def unexpected(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    code = ErrorCode.INTERNAL_ERROR
    return {"error": {"code": code, "message": "something went wrong on our side"}}, code.status


def security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    csp = DOCS_CSP if request.path.startswith("/docs") else PAGE_CSP
    response.headers.setdefault("Content-Security-Policy", csp)
    return response


def register(app: APIFlask) -> None:
    app.error_processor(error_body)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(ParseException, malformed)
    app.register_error_handler(ClientDisconnected, incomplete_body)
    app.register_error_handler(UploadTooSlow, upload_too_slow)
    app.register_error_handler(RedisError, redis_down)
    app.register_error_handler(Exception, unexpected)
    app.after_request(security_headers)
