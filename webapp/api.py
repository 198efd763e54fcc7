"""REST contract v1: submit a job, poll it (optionally as a long poll), list the classes and limits."""
from __future__ import annotations

import uuid

from apiflask import APIBlueprint, abort
from flask import current_app, url_for

from common.model_card import model_identity
from webapp import schemas
from webapp.guards import submission
from webapp.uploads import read_upload, submit

bp = APIBlueprint("api", __name__, url_prefix="/api/v1", tag="Jobs")

MAX_WAIT_S = 30.0
DESCRIPTION = """Tells which of 100 sports a photo shows.

Submit images with `POST /api/v1/jobs`, then poll the `status_url` it returns (add `?wait=S`,
S ≤ 30, to hold the request until the job is done). Every error body is
`{{"error": {{"code", "message"}}}}`.

**Limits**: {s.max_images_per_job} images per job, {s.max_image_bytes:,} bytes per image,
{s.max_request_bytes:,} bytes per request, {s.max_pixels:,} pixels per image. Results are kept
{s.result_ttl_s:,} seconds."""


def job_document(job: dict) -> dict:
    if job["model"] is None:  # no worker has written yet: name the model this deployment serves
        job["model"] = model_identity(current_app.extensions["model_card"])
    return job


def find_job(job_id: str, wait_s: float) -> dict:
    try:
        uuid.UUID(job_id)
    except ValueError:
        abort(404, f"no job with id {job_id!r}: job ids are UUIDs", extra_data={"code": "job_not_found"})
    jobs = current_app.extensions["jobs"]
    job = jobs.wait(job_id, wait_s) if wait_s > 0 else jobs.get(job_id)
    if job is None:
        abort(404, f"no job with id {job_id!r} (unknown, or its results expired)", extra_data={"code": "job_not_found"})
    return job_document(job)


@bp.post("/jobs")
@submission  # before the upload is read: a refused client costs nothing
@bp.input(schemas.UploadIn, location="files", validation=False)
@bp.output(schemas.JobAccepted, status_code=202, description="accepted; poll status_url (also in the Location header)")
@bp.doc(summary="Submit images for classification", security="ApiKeyAuth",
        responses={400: "no file part", 401: "API key required", 413: "a limit was exceeded",
                   429: "too many requests from this client", 503: "the queue is full or Redis is unreachable"})
def create_job(files_data):
    job = read_upload(current_app.extensions["settings"].max_images_per_job)
    submit(job)
    status_url = url_for("api.get_job", job_id=job.job_id)
    body = {"job_id": job.job_id, "status": "queued", "total": len(job.filenames), "status_url": status_url}
    return body, 202, {"Location": status_url}


@bp.get("/jobs/<job_id>")
@bp.input(schemas.WaitQuery, location="query")
@bp.output(schemas.JobOut)
@bp.doc(summary="A job's status and results",
        responses={404: "unknown or expired job id", 422: "bad wait value", 503: "Redis unreachable; retry after Retry-After"})
def get_job(job_id: str, query_data):
    wait = query_data["wait"]
    if not 0 <= wait <= MAX_WAIT_S:
        abort(422, f"wait must be between 0 and {MAX_WAIT_S:g} seconds", extra_data={"code": "invalid_wait"})
    return find_job(job_id, wait)


@bp.get("/classes")
@bp.output(schemas.ClassesOut)
@bp.doc(summary="The sports the model knows")
def list_classes():
    card = current_app.extensions["model_card"]
    return {"classes": card["classes"], "display_names": dict(zip(card["classes"], card["display_names"]))}


@bp.get("/limits")
@bp.output(schemas.LimitsOut)
@bp.doc(summary="What one request may carry", description="Clients split their uploads by these (the page and "
        "the sportclf client do), so an operator's change of a limit needs no change of client.")
def get_limits():
    s = current_app.extensions["settings"]
    return {"max_images_per_job": s.max_images_per_job, "max_image_bytes": s.max_image_bytes,
            "max_request_bytes": s.max_request_bytes, "max_pixels": s.max_pixels}
