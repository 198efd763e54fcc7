"""Turning an upload request into a job: request-level mistakes are refused with a 4xx; an
unreadable image is recorded as failed in its own slot so the rest of the job goes ahead."""
from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

from flask import current_app, request
from redis.exceptions import RedisError

from common.chunks import chunked
from common.error_codes import ErrorCode
from common.jobs import failure
from common.preprocess import MB, ImageError, Preprocessing, check_cost, open_image
from common.queue import enqueue, queue_for
from webapp.errors import fail

FIELD = "file"
# What reading and submitting an upload can answer (Werkzeug's for a malformed or oversized body).
UPLOAD_ERRORS = (ErrorCode.NO_FILE, ErrorCode.UNEXPECTED_FIELD, ErrorCode.BAD_REQUEST, ErrorCode.TOO_MANY_FILES,
                 ErrorCode.FILE_TOO_LARGE, ErrorCode.REQUEST_TOO_LARGE, ErrorCode.UNAVAILABLE)


@dataclass
class NewJob:
    job_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # random: ids are unguessable
    filenames: list[str] = field(default_factory=list)
    images: dict[int, bytes] = field(default_factory=dict)
    failures: dict[int, dict] = field(default_factory=dict)
    heavy: set[int] = field(default_factory=set)  # costly to decode: each runs in a task of its own


def read_upload(max_files: int) -> NewJob:
    settings = current_app.extensions["settings"]
    files = request.files.getlist(FIELD)
    if not files:
        other = sorted(request.files.keys())
        hint = f"; got parts named {other}" if other else ""
        fail(ErrorCode.NO_FILE, f"send images as multipart/form-data parts named '{FIELD}'{hint}")
    unexpected = sorted(str(name) for name in (set(request.files) | set(request.form)) - {FIELD})
    if unexpected:
        fail(ErrorCode.UNEXPECTED_FIELD, f"unexpected form fields {unexpected}: send only parts named '{FIELD}'")
    if len(files) > max_files:
        fail(ErrorCode.TOO_MANY_FILES, f"{len(files)} files is over the limit of {max_files} per job")
    size = Preprocessing.from_card(current_app.extensions["model_card"]).size
    job = NewJob()
    for index, upload in enumerate(files):
        data = upload.read(settings.max_image_bytes + 1)
        name = safe_filename(upload.filename, index)
        if len(data) > settings.max_image_bytes:
            fail(ErrorCode.FILE_TOO_LARGE, f"{name} is over the limit of {settings.max_image_bytes:,} bytes per image")
        job.filenames.append(name)
        try:
            image = open_image(data, settings.max_pixels)  # header only: cheap, catches most non-images
            if check_cost(image, size, settings.max_decode_mb) > settings.heavy_decode_mb * MB:
                job.heavy.add(index)
            job.images[index] = data
        except ImageError as exc:
            job.failures[index] = failure(exc.code, exc.message)
    return job


def safe_filename(name: str | None, index: int) -> str:
    """A display name only (never a path): the last path component, printable, at most 200 chars."""
    name = PureWindowsPath(PurePosixPath(name or "").name).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:200] or f"image-{index + 1}"


def submit(job: NewJob) -> None:
    """Records the job, then queues its images in chunks that each run as one batched inference.
    If this process dies in between, workers queue the chunks (see common/chunks.py). If the broker
    fails part-way, the chunks not queued fail visibly and the client gets a 503."""
    settings, jobs = current_app.extensions["settings"], current_app.extensions["jobs"]
    chunks, queue = chunked(sorted(job.images), settings.chunk_size, job.heavy), queue_for(current_app.extensions["model_card"]["name"])
    listed_before = jobs.create(job.job_id, job.filenames, job.images, job.failures, chunks, job.heavy, queue)
    refused = enqueue(current_app.extensions["celery"], jobs, job.job_id, chunks, job.heavy, queue, listed_before)
    if refused:
        try:
            jobs.fail(job.job_id, refused, ErrorCode.NOT_QUEUED, "the queue was unreachable; send this image again")
        except RedisError:  # the store refuses writes too: drop the job rather than leave one no client knows
            jobs.discard(job.job_id, list(job.images), chunks)
        fail(ErrorCode.UNAVAILABLE, "the queue is unreachable; try again shortly", headers={"Retry-After": "5"})
