"""REST contract v1: submit a job, poll it (optionally as a long poll), cancel it, list the classes
and limits."""
from __future__ import annotations

import uuid
from contextlib import nullcontext

from apiflask import APIBlueprint, HTTPError
from flask import current_app, jsonify, url_for

from common.documents import job_document
from common.error_codes import ErrorCode
from common.jobs import QUEUED, Job, Watch
from common.model_card import model_identity
from webapp import examples, idempotency, schemas
from webapp.errors import fail
from webapp.guards import GUARD_ERRORS, long_poll_slot, submission
from webapp.models import current, known
from webapp.metrics import record_cancelled
from webapp.openapi import errors
from webapp.uploads import SUBMIT_ERRORS, UPLOAD_ERRORS, read_upload, submit

bp = APIBlueprint("api", __name__, url_prefix="/api/v1", tag="Jobs")

MAX_WAIT_S = 30.0
FREE_WAIT_S = 1.0  # how long POST ?wait waits before it takes a long-poll slot (finished_within)
# POST ?wait's other answer: the job, finished within the wait (its JobOut document).
FINISHED_JOB = {"description": "finished within `wait` seconds: the job, as GET answers it",
                "headers": {"Location": {"description": "the job's status_url", "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobOut"},
                                                 "example": examples.JOB_DONE}}}
DESCRIPTION = """Tells which of 100 sports a photo shows.

Submit images with `POST /api/v1/jobs`, then poll the `status_url` it returns (add `?wait=S`,
S ≤ 30, to hold the request until the job is done); `DELETE` it to cancel. `POST ...?wait=S` holds
the submission itself: the finished job comes back (200) if it finishes within S seconds, one
exchange for a lone photo. Every error body is
`{{"error": {{"code", "message"}}}}`.

**Limits**: {s.max_images_per_job} images per job, {s.max_image_bytes:,} bytes per image,
{s.max_request_bytes:,} bytes per request, {s.max_pixels:,} pixels per image. Results are kept
{s.result_ttl_s:,} seconds."""


def known_id(job_id: str) -> str:
    try:
        job_id = str(uuid.UUID(job_id))  # the canonical form: ids are case-insensitive, as UUIDs are
    except ValueError:
        fail(ErrorCode.JOB_NOT_FOUND, f"no job with id {job_id!r}: job ids are UUIDs")
    return job_id


def found(job: Job | None, job_id: str) -> dict:
    """The job's v1 document, or a 404 when there is no such job."""
    if job is None:
        fail(ErrorCode.JOB_NOT_FOUND, f"no job with id {job_id!r} (unknown, or its results expired)")
    return job_document(job, model_identity(current_app.extensions["model_card"]))


@bp.post("/jobs")
@submission  # before the upload is read: a refused client costs nothing
@bp.input(schemas.UploadIn, location="files", validation=False, examples=examples.UPLOAD)
@bp.input(schemas.IdempotencyHeader, location="headers", validation=False)  # checked in idempotency.py: 400
@bp.input(schemas.SubmitQuery, location="query")
@bp.output(schemas.JobAccepted, status_code=202, description="accepted; poll status_url (also in the Location "
           "header). With `wait`: accepted, and not finished within `wait` seconds",
           example=examples.JOB_ACCEPTED, headers=schemas.AcceptedHeaders)
@bp.doc(summary="Submit images for classification",
        description=f"One part named `file` per image: `{examples.UPLOAD_CURL}`. With `?wait=S` the request is "
        "held until the job is done, for at most S seconds (≤ 30): done in time, the answer is the job itself (200). "
        "Optional: a `callback_url` part (a webhook once the job is done) and an `Idempotency-Key` header (a retry "
        "gets the first job).",
        responses=errors(*GUARD_ERRORS, *UPLOAD_ERRORS, *SUBMIT_ERRORS, ErrorCode.INVALID_WAIT,
                         ErrorCode.UNKNOWN_MODEL) | {200: FINISHED_JOB})
def create_job(files_data, headers_data, query_data):
    wait, key = valid_wait(query_data["wait"]), idempotency.key_from_request()
    job = read_upload(current_app.extensions["settings"].max_images_per_job, callback=True)
    # Watched from before it exists, so a finish right after the create cannot be missed (a job
    # with no images to classify is finished once created: it is read).
    with current_app.extensions["jobs"].watching(job.job_id) if wait and job.images else nullcontext() as watch:
        first = submit(job, key)
        job_id, total = (first["job_id"], first["total"]) if first else (job.job_id, len(job.filenames))
        finished = finished_within(job_id, wait, None if first else watch) if wait else None  # first: another job
    status_url = url_for("api.get_job", job_id=job_id)
    headers = {"Location": status_url} | ({idempotency.REPLAYED_HEADER: "true"} if first else {})
    if finished is not None:  # a Response, as is: @bp.output's schema (JobAccepted) is the 202's
        response = jsonify(found(finished, job_id))
        response.headers.update(headers)
        return response
    return {"job_id": job_id, "status": QUEUED, "total": total, "status_url": status_url}, 202, headers


def finished_within(job_id: str, wait: float, created: Watch | None) -> Job | None:
    """The job if it finishes within `wait` seconds; else None, as when the client holds its most
    long polls already: the job is accepted either way, and the 202 says where to poll. `created`:
    the watch on a job just created with images to classify (see JobStore.wait). The first
    FREE_WAIT_S seconds hold no long-poll slot: submissions are bounded by the rate limit already,
    and most one-photo jobs are done by then, without the round trips of taking and giving back one."""
    jobs, free = current_app.extensions["jobs"], min(wait, FREE_WAIT_S)
    job = jobs.wait(job_id, free, created)
    if job is not None and not job.finished and wait > free:
        try:
            with long_poll_slot(wait - free):
                job = jobs.wait(job_id, wait - free, created)
        except HTTPError as exc:
            if exc.status_code != ErrorCode.TOO_MANY_LONG_POLLS.status:
                raise
            return None
    return job if job is not None and job.finished else None


def valid_wait(wait: float) -> float:
    if not 0 <= wait <= MAX_WAIT_S:
        fail(ErrorCode.INVALID_WAIT, f"wait must be between 0 and {MAX_WAIT_S:g} seconds")
    return wait


@bp.get("/jobs/<job_id>")
@bp.input(schemas.WaitQuery, location="query")
@bp.output(schemas.JobOut, example=examples.JOB_DONE)
@bp.doc(summary="A job's status and results",
        responses=errors(ErrorCode.JOB_NOT_FOUND, ErrorCode.UNPROCESSABLE_ENTITY, ErrorCode.INVALID_WAIT,
                         ErrorCode.TOO_MANY_LONG_POLLS, ErrorCode.UNAVAILABLE))
def get_job(job_id: str, query_data):
    wait = valid_wait(query_data["wait"])
    job_id, jobs = known_id(job_id), current_app.extensions["jobs"]
    if wait == 0:
        return found(jobs.get(job_id), job_id)
    with long_poll_slot(wait):
        return found(jobs.wait(job_id, wait), job_id)


@bp.delete("/jobs/<job_id>")
@bp.output(schemas.JobOut, description="the job after cancelling (done once no image is running)",
           example=examples.JOB_CANCELLED)
@bp.doc(summary="Cancel a job", description="Its queued images become `cancelled`; images already running "
        "finish and keep their results. Cancelling again, or a finished job, changes nothing.",
        responses=errors(ErrorCode.JOB_NOT_FOUND, ErrorCode.UNAVAILABLE))
def cancel_job(job_id: str):
    job_id, jobs = known_id(job_id), current_app.extensions["jobs"]
    before = jobs.get(job_id)
    after = jobs.cancel(job_id)
    record_cancelled(before, after)
    return found(after, job_id)


@bp.get("/classes")
@bp.output(schemas.ClassesOut, example=examples.CLASSES)
@bp.doc(summary="The sports the model knows")
def list_classes():
    card = current_app.extensions["model_card"]
    return {"classes": card["classes"], "display_names": dict(zip(card["classes"], card["display_names"]))}


@bp.get("/limits")
@bp.output(schemas.LimitsOut, example=examples.LIMITS)
@bp.doc(summary="What one request may carry", description="Clients split their uploads by these (the page and "
        "the sportclf client do), so an operator's change of a limit needs no change of client.")
def get_limits():
    s = current_app.extensions["settings"]
    return {"max_images_per_job": s.max_images_per_job, "max_image_bytes": s.max_image_bytes,
            "max_request_bytes": s.max_request_bytes, "max_pixels": s.max_pixels}


@bp.get("/model")
@bp.output(schemas.ModelOut, example=examples.MODEL_INFO)
@bp.doc(summary="The model that takes this deployment's jobs (the active one), and how often it is right",
        description="Every model, with its share of jobs: `GET /api/v1/models`.",
        responses=errors(ErrorCode.UNAVAILABLE))
def get_model():
    card = known(current().active).card
    metrics = card.get("metrics", {})
    return model_identity(card) | {"architecture": card.get("architecture"), "precision": card.get("precision"),
                                   "accuracy": metrics.get("valid"), "real_world_accuracy": metrics.get("wild-dev")}
