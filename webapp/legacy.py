"""POST /predict: the original project's synchronous endpoint, kept for its users. It is a job
like any other underneath, waited on here for a bounded time."""
from __future__ import annotations

from contextlib import nullcontext

from apiflask import APIBlueprint
from flask import current_app, url_for

from common.error_codes import ErrorCode
from common.jobs import CANCELLED, DONE, FAILED
from webapp import examples, schemas
from webapp.errors import fail
from webapp.guards import GUARD_ERRORS, long_poll_slot, submission
from webapp.openapi import errors
from webapp.uploads import UPLOAD_ERRORS, read_upload, submit

bp = APIBlueprint("legacy", __name__, tag="Legacy")

# An image's failure is the error of the request, with the code's status: 422 for the file's own
# fault, 5xx where sending it again may work. (not_queued never gets here: submit answers 503.)
IMAGE_FAILURES = [ErrorCode.EMPTY_FILE, ErrorCode.NOT_AN_IMAGE, ErrorCode.CORRUPT_IMAGE, ErrorCode.IMAGE_TOO_LARGE,
                  ErrorCode.DECODE_ERROR, ErrorCode.WORKER_CRASHED, ErrorCode.INFERENCE_ERROR, ErrorCode.IMAGE_EXPIRED]


def percent(confidence: float) -> float:
    return round(confidence * 100, 2)


@bp.post("/predict")
@submission  # before the upload is read: a refused client costs nothing
@bp.input(schemas.PredictIn, location="files", validation=False, examples=examples.PREDICT_UPLOAD)
@bp.input(schemas.ModelQuery, location="query")
@bp.output(schemas.PredictOut, example=examples.PREDICTION)
@bp.doc(summary="Classify one image and wait for the answer", description=f"`{examples.PREDICT_CURL}`",
        responses=errors(*GUARD_ERRORS, *UPLOAD_ERRORS, ErrorCode.TOO_MANY_LONG_POLLS, ErrorCode.JOB_LOST,
                         ErrorCode.JOB_CANCELLED, ErrorCode.TIMEOUT, ErrorCode.UNKNOWN_MODEL, *IMAGE_FAILURES))
def predict(files_data, query_data):
    settings = current_app.extensions["settings"]
    jobs = current_app.extensions["jobs"]
    with long_poll_slot(settings.predict_timeout_s):  # it waits as a long poll does, so it counts as one
        job = read_upload(max_files=1)
        with jobs.watching(job.job_id) if job.images else nullcontext() as watch:  # see JobStore.wait
            submit(job)
            job_now = jobs.wait(job.job_id, settings.predict_timeout_s, watch)
    if job_now is None:  # evicted or flushed from Redis while we waited
        fail(ErrorCode.JOB_LOST, "the job was lost from the job store; send the image again")
    result = job_now.images[0]
    if result["status"] == FAILED:
        fail(ErrorCode(result["error"]["code"]), result["error"]["message"])
    if result["status"] == CANCELLED:
        fail(ErrorCode.JOB_CANCELLED, f"job {job.job_id} was cancelled before its image ran")
    if result["status"] != DONE:
        status_url = url_for("api.get_job", job_id=job.job_id)
        fail(ErrorCode.TIMEOUT, f"no result within {settings.predict_timeout_s:g} s; the job goes on at {status_url}",
             job_id=job.job_id, status_url=status_url)
    top3 = [{"sport": p["label"], "confidence": percent(p["confidence"])} for p in result["top3"]]
    return {"sport": top3[0]["sport"], "confidence": top3[0]["confidence"], "top_3": top3,
            "confident": result["confident"]}
