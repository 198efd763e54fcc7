"""Turning an upload request into a job: request-level mistakes are refused with a 4xx; an
unreadable image is recorded as failed in its own slot so the rest of the job goes ahead."""
from __future__ import annotations

import hashlib
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import NoReturn

from flask import current_app, request
from redis.client import Pipeline
from redis.exceptions import RedisError

from common import shadow
from common.chunks import chunked
from common.error_codes import ErrorCode
from common.jobs import failure
from common.preprocess import MB, ImageError, Preprocessing, check_cost, open_image
from common.queue import enqueue, queue_for
from common.registry import ModelEntry
from common.webhooks import check_url
from webapp import idempotency
from webapp.errors import fail
from webapp.metrics import record_submitted
from webapp.models import route

FIELD = "file"
CALLBACK_FIELD = "callback_url"
# What reading and submitting an upload can answer (Werkzeug's for a malformed or oversized body).
UPLOAD_ERRORS = (ErrorCode.NO_FILE, ErrorCode.UNEXPECTED_FIELD, ErrorCode.BAD_REQUEST, ErrorCode.TOO_MANY_FILES,
                 ErrorCode.FILE_TOO_LARGE, ErrorCode.REQUEST_TOO_LARGE, ErrorCode.INCOMPLETE_BODY,
                 ErrorCode.UPLOAD_TOO_SLOW, ErrorCode.UNAVAILABLE)
# What POST /api/v1/jobs's callback_url and Idempotency-Key add.
SUBMIT_ERRORS = (ErrorCode.INVALID_IDEMPOTENCY_KEY, ErrorCode.IDEMPOTENCY_KEY_REUSED, ErrorCode.INVALID_CALLBACK_URL,
                 ErrorCode.WEBHOOKS_DISABLED)


@dataclass
class NewJob:
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # random: ids are unguessable
    filenames: list[str] = field(default_factory=list)
    images: dict[int, bytes] = field(default_factory=dict)
    failures: dict[int, dict] = field(default_factory=dict)
    heavy: set[int] = field(default_factory=set)  # costly to decode: each runs in a task of its own
    callback_url: str | None = None
    # What makes two requests the same one (for Idempotency-Key): every file's name and bytes, in
    # order, and the callback_url.
    fingerprint: "hashlib._Hash" = field(default_factory=hashlib.sha256)

    def remember(self, *parts: bytes) -> None:
        """Adds parts to the fingerprint, each after its length, so no two sequences hash alike."""
        for part in parts:
            self.fingerprint.update(len(part).to_bytes(8, "big") + part)


def read_upload(max_files: int, callback: bool = False) -> NewJob:
    """The request's files as a job; with `callback`, also its optional `callback_url` field."""
    settings = current_app.extensions["settings"]
    files = request.files.getlist(FIELD)
    if not files:
        other = sorted(request.files.keys())
        hint = f"; got parts named {other}" if other else ""
        fail(ErrorCode.NO_FILE, f"send images as multipart/form-data parts named '{FIELD}'{hint}")
    allowed = {FIELD, CALLBACK_FIELD} if callback else {FIELD}
    unexpected = sorted(str(name) for name in (set(request.files) | set(request.form)) - allowed)
    if unexpected:
        fail(ErrorCode.UNEXPECTED_FIELD, f"unexpected form fields {unexpected}: send only {sorted(allowed)}")
    if len(files) > max_files:
        fail(ErrorCode.TOO_MANY_FILES, f"{len(files)} files is over the limit of {max_files} per job")
    size = Preprocessing.from_card(current_app.extensions["model_card"]).size
    job = NewJob(callback_url=read_callback_url() if callback else None)
    for index, upload in enumerate(files):
        data = upload.read(settings.max_image_bytes + 1)
        name = safe_filename(upload.filename, index)
        if len(data) > settings.max_image_bytes:
            fail(ErrorCode.FILE_TOO_LARGE, f"{name} is over the limit of {settings.max_image_bytes:,} bytes per image")
        job.remember((upload.filename or "").encode(), data)
        job.filenames.append(name)
        try:
            image = open_image(data, settings.max_pixels)  # header only: cheap, catches most non-images
            if check_cost(image, size, settings.max_decode_mb) > settings.heavy_decode_mb * MB:
                job.heavy.add(index)
            job.images[index] = data
        except ImageError as exc:
            job.failures[index] = failure(exc.code, exc.message)
    job.remember((job.callback_url or "").encode())
    return job


def read_callback_url() -> str | None:
    """The form's `callback_url`, if any, once it is known to be one the service may call. An empty
    one is none: a form (/docs's "Try it out", an HTML form) sends its empty fields too."""
    settings, urls = current_app.extensions["settings"], request.form.getlist(CALLBACK_FIELD)
    if urls in ([], [""]):
        return None
    if not settings.webhook_secret:
        fail(ErrorCode.WEBHOOKS_DISABLED, "this service has no WEBHOOK_SECRET to sign callbacks with: "
             f"send the job without {CALLBACK_FIELD} and poll its status_url")
    problem = "send one callback_url" if len(urls) > 1 else check_url(urls[0], bool(settings.webhook_allow_private))
    if problem:
        fail(ErrorCode.INVALID_CALLBACK_URL, problem)
    return urls[0]


def safe_filename(name: str | None, index: int) -> str:
    """A display name only (never a path): the last path component, printable, at most 200 chars."""
    name = PureWindowsPath(PurePosixPath(name or "").name).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:200] or f"image-{index + 1}"


def submit(job: NewJob, idempotency_key: str | None = None) -> dict | None:
    """Records the job, then queues its images in chunks that each run as one batched inference.
    If this process dies in between, workers queue the chunks (see common/chunks.py). If the broker
    fails part-way, the chunks not queued fail visibly and the client gets a 503. With an
    `idempotency_key` already used, nothing is created: returns the first job's {job_id, total}."""
    settings, jobs = current_app.extensions["settings"], current_app.extensions["jobs"]
    model, shadow_model = route(request.args.get("model"))
    chunks = chunked(sorted(job.images), settings.chunk_size, job.heavy)
    first, wake_due = _create(job, chunks, idempotency_key, model)
    if first is not None:
        idempotency.check_same_request(first, job.fingerprint.hexdigest())
        return first
    refused = enqueue(current_app.extensions["celery"], jobs, job.job_id, chunks, job.heavy, model.id, wake_due)
    if refused:
        _refuse(job, chunks, refused, idempotency_key)
    if shadow_model and chunks:
        shadow.keep_copies(jobs.redis, job.job_id, job.images, settings.result_ttl_s)
        shadow.send(current_app.extensions["celery"], job.job_id, chunks, shadow_model)
    record_submitted(job)
    return None


def _refuse(job: NewJob, chunks: list[list[int]], refused: list[list[int]], idempotency_key: str | None) -> NoReturn:
    """The broker refused some chunks: they fail visibly (or the whole job goes, if the store
    refuses writes too), a retry with the same key may try again, and the client gets a 503."""
    jobs = current_app.extensions["jobs"]
    try:
        jobs.fail(job.job_id, refused, ErrorCode.NOT_QUEUED, "the queue was unreachable; send this image again")
    except RedisError:  # the store refuses writes too: drop the job rather than leave one no client knows
        jobs.discard(job.job_id, list(job.images), chunks)
    if idempotency_key:  # the client hears 503: its retry with this key should try again
        idempotency.forget(idempotency_key)
    fail(ErrorCode.UNAVAILABLE, "the queue is unreachable; try again shortly", headers={"Retry-After": "5"})


def _create(job: NewJob, chunks: list[list[int]], idempotency_key: str | None,
            model: ModelEntry) -> tuple[dict | None, bool | None]:
    """Stores the job, its light chunks listed ready on `model`'s queue; with an idempotency key,
    only if the key is new (else nothing is stored, and the first job's record is returned). Also
    answers whether a wake-up is due (see JobStore.create)."""
    jobs, due = current_app.extensions["jobs"], []

    def create(pipe: Pipeline | None = None) -> None:
        due.append(jobs.create(job.job_id, job.filenames, job.images, job.failures, chunks, model=model.identity,
                                  callback_url=job.callback_url, heavy=job.heavy, queue=queue_for(model.id), pipe=pipe))

    if not idempotency_key:
        create()
        return None, due[0]
    record = {"job_id": job.job_id, "total": len(job.filenames), "fingerprint": job.fingerprint.hexdigest()}
    first = idempotency.create_once(idempotency_key, record, create)
    return first, due[-1] if due else None
