"""Idempotent submits: a client that sends `Idempotency-Key` with a POST can send it again (after a
timeout, a dropped connection) and get the first job back instead of a second one.

The key is stored as `idempotency:<sha256 of the key>` -> {job_id, total, fingerprint} in the same
transaction (MULTI/EXEC under WATCH) that creates the job, so the two appear together or not at
all: no crash can leave a key naming a job that never existed, and of two requests racing with one
key, one creates the job and the other finds it. The key lives as long as results do
(RESULT_TTL_S). Keys are one namespace for the whole service: it has at most one API key, so every
client is the same tenant (with keys per client, the client's id would go into the name).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from flask import current_app, request
from redis.client import Pipeline
from redis.exceptions import WatchError

from common.error_codes import ErrorCode
from webapp.errors import fail

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces: what Stripe-style clients send (UUIDs)


def key_from_request() -> str | None:
    key = request.headers.get(HEADER)
    if key is not None and not KEY.fullmatch(key):
        fail(ErrorCode.INVALID_IDEMPOTENCY_KEY, f"{HEADER} must be 1 to 255 printable ASCII characters without "
             "spaces, such as a UUID")
    return key


def redis_key(key: str) -> str:
    return "idempotency:" + hashlib.sha256(key.encode()).hexdigest()


def create_once(key: str, record: dict, create: Callable[[Pipeline], None]) -> dict | None:
    """Runs `create` (which adds a job to the transaction it is given and executes it) together
    with storing `record` under `key`, unless the key is stored already: then nothing is created
    and the first request's record is returned. A race lost to another request (the key changed
    under WATCH) is retried, and then finds that request's record."""
    redis, name = current_app.extensions["redis"], redis_key(key)
    while True:
        with redis.pipeline() as pipe:
            pipe.watch(name)
            first = pipe.get(name)
            if first is not None:
                return json.loads(first)
            pipe.multi()
            pipe.set(name, json.dumps(record), ex=current_app.extensions["settings"].result_ttl_s)
            try:
                create(pipe)
                return None
            except WatchError:
                continue


def check_same_request(first: dict, fingerprint: str) -> None:
    if first["fingerprint"] != fingerprint:
        fail(ErrorCode.IDEMPOTENCY_KEY_REUSED, f"this {HEADER} was used for a different request (other files, file "
             f"names or callback_url), which created job {first['job_id']}; send a new key for a new request")


def forget(key: str) -> None:
    """For a submission that failed (503) after its job was stored: a retry with the key should
    try again rather than get that job back. A DEL, which Redis allows even when out of memory."""
    current_app.extensions["redis"].delete(redis_key(key))
