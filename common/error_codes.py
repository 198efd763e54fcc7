"""Every machine-readable error code a client can meet, with its HTTP status and meaning.

The one list: the web app answers with these (`{"error": {"code", "message"}}`), the workers
record the image failures among them in job results, and /openapi.json enumerates them from here.
A new code is added here first; using one that is not here fails at the line that names it.
"""
from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """A code (its value) with the status a request gets for it and what it means."""

    status: int
    meaning: str

    def __new__(cls, value: str, status: int, meaning: str) -> "ErrorCode":
        member = str.__new__(cls, value)
        member._value_ = value
        member.status, member.meaning = status, meaning
        return member

    # The request is refused as a whole.
    BAD_REQUEST = "bad_request", 400, "the request is malformed (for example a broken multipart body)"
    NO_FILE = "no_file", 400, "the request has no multipart part named `file`"
    UNEXPECTED_FIELD = "unexpected_field", 400, ("the request has form fields other than `file` "
                                                 "(and `callback_url` on `POST /api/v1/jobs`)")
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key", 400, ("`Idempotency-Key` is empty, longer than 255 "
                                                               "characters, or not printable ASCII without spaces")
    UNAUTHORIZED = "unauthorized", 401, ("an API key is configured and `X-API-Key` is missing or wrong (for `/metrics`: "
                                         "`METRICS_TOKEN` is set and `Authorization: Bearer` is missing or wrong)")
    NOT_FOUND = "not_found", 404, "no such URL"
    JOB_NOT_FOUND = "job_not_found", 404, "no job has this id: it is not a job id, or its results expired"
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "the URL exists, not with this method"
    JOB_CANCELLED = "job_cancelled", 409, "`/predict`: its job was cancelled (DELETE) before the image ran"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused", 409, ("this `Idempotency-Key` came with a different request "
                                                             "(other files, file names or callback_url) within "
                                                             "the result TTL; use a new key for a new request")
    MALFORMED_REQUEST = "malformed_request", 400, "the request's framing is broken (for example a bad chunk size)"
    INCOMPLETE_BODY = "incomplete_body", 400, "the body ended, or stopped arriving for `WEB_BODY_TIMEOUT_S`, early"
    UPLOAD_TOO_SLOW = "upload_too_slow", 408, "the body did not arrive in full within `WEB_BODY_DEADLINE_S`"
    TOO_MANY_PARTS = "too_many_parts", 413, "more form parts than one request may have"
    TOO_MANY_FILES = "too_many_files", 413, "more files than `max_images_per_job` in one request"
    FILE_TOO_LARGE = "file_too_large", 413, "a file over `max_image_bytes`"
    REQUEST_TOO_LARGE = "request_too_large", 413, "a request body over `max_request_bytes`"
    UNPROCESSABLE_ENTITY = "unprocessable_entity", 422, "a parameter of the wrong type (for example `?wait=soon`)"
    INVALID_WAIT = "invalid_wait", 422, "`?wait=` outside 0..30 seconds"
    INVALID_CALLBACK_URL = "invalid_callback_url", 422, ("`callback_url` is not an http(s) URL, does not resolve, "
                                                         "or resolves to a private or loopback address")
    WEBHOOKS_DISABLED = "webhooks_disabled", 422, "a `callback_url` was sent, but this service has no WEBHOOK_SECRET"
    UNKNOWN_MODEL = "unknown_model", 422, ("`?model=`, or a routing change, names a model id (name@version) the "
                                           "service does not have; the message lists those it has")
    ROUTING_LOCKED = "routing_locked", 403, "changing the model routing needs `API_KEY` set on the service"
    TOO_MANY_REQUESTS = "too_many_requests", 429, "this client sent more submissions than `RATE_LIMIT` allows"
    TOO_MANY_LONG_POLLS = "too_many_long_polls", 429, ("this client already holds `MAX_LONG_POLLS_PER_CLIENT` long polls "
                                                       "(`?wait=` or `/predict`); try again after Retry-After seconds")
    INTERNAL_ERROR = "internal_error", 500, "a fault on the service's side"
    OVERLOADED = "overloaded", 503, "the queue is full; try again after Retry-After seconds"
    UNAVAILABLE = "unavailable", 503, "Redis or the queue is unreachable; try again after Retry-After seconds"
    JOB_LOST = "job_lost", 503, "`/predict`: the job vanished from the job store while waiting; send the image again"
    TIMEOUT = "timeout", 504, "`/predict`: no result in time; the job goes on at `status_url`"

    # One image failed; the rest of its job goes on. In a job's `results[i].error`, and as the
    # error of `/predict` (with this status) when its one image fails.
    EMPTY_FILE = "empty_file", 422, "the file is empty"
    NOT_AN_IMAGE = "not_an_image", 422, "the file is not an image in a supported format"
    CORRUPT_IMAGE = "corrupt_image", 422, "the image's header is readable, its pixels are not"
    IMAGE_TOO_LARGE = "image_too_large", 422, "the image has more than `max_pixels` pixels"
    IMAGE_TOO_HEAVY = "image_too_heavy", 422, ("decoding the image would take more than `max_decode_mb` "
                                               "(pixels x bytes per pixel; only JPEG decodes at reduced size), "
                                               "or ran out of the worker's memory ceiling")
    DECODE_ERROR = "decode_error", 422, "the image could not be processed"
    WORKER_CRASHED = "worker_crashed", 422, "the batch holding this image stopped a worker three times"
    INFERENCE_ERROR = "inference_error", 500, "the model failed on this image"
    IMAGE_EXPIRED = "image_expired", 503, "the image expired before a worker reached it; send it again"
    NOT_QUEUED = "not_queued", 503, "the queue was unreachable when the job was submitted; send it again"

    @classmethod
    def for_status(cls, status: int) -> "ErrorCode":
        """The generic code for an error raised without one (Werkzeug's 404, 405, ...)."""
        generic = {400: cls.BAD_REQUEST, 404: cls.NOT_FOUND, 405: cls.METHOD_NOT_ALLOWED,
                   413: cls.REQUEST_TOO_LARGE, 422: cls.UNPROCESSABLE_ENTITY}
        return generic.get(status, cls.BAD_REQUEST if status < 500 else cls.INTERNAL_ERROR)
