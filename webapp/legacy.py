"""POST /predict: the original project's synchronous endpoint, kept for its users. It is a job
like any other underneath, waited on here for a bounded time."""
from __future__ import annotations

from apiflask import APIBlueprint, abort
from flask import current_app, url_for

from common.jobs import DONE, FAILED
from webapp import schemas
from webapp.guards import submission
from webapp.uploads import read_upload, submit

bp = APIBlueprint("legacy", __name__, tag="Legacy")

# Failures that are not the image's fault answer 5xx (the client may send it again); every other
# failure (not an image, corrupt, too large, ...) is the file's, 422.
SERVICE_FAILURES = {"inference_error": 500, "image_expired": 503}  # (not_queued: submit answers 503 itself)


def percent(confidence: float) -> float:
    return round(confidence * 100, 2)


@bp.post("/predict")
@submission  # before the upload is read: a refused client costs nothing
@bp.input(schemas.PredictIn, location="files", validation=False)
@bp.output(schemas.PredictOut)
@bp.doc(summary="Classify one image and wait for the answer", security="ApiKeyAuth",
        responses={400: "no file part", 401: "API key required", 413: "a limit was exceeded", 422: "the file is not a usable image",
                   429: "too many requests from this client", 500: "the model failed on this image",
                   503: "the queue is full, or the image was lost on the way; send it again",
                   504: "no answer in time; poll the job"})
def predict(files_data):
    job = read_upload(max_files=1)
    submit(job)
    settings = current_app.extensions["settings"]
    job_now = current_app.extensions["jobs"].wait(job.job_id, settings.predict_timeout_s)
    if job_now is None:  # evicted or flushed from Redis while we waited
        abort(503, "the job was lost from the job store; send the image again", extra_data={"code": "job_lost"})
    result = job_now.images[0]
    if result["status"] == FAILED:
        code = result["error"]["code"]
        abort(SERVICE_FAILURES.get(code, 422), result["error"]["message"], extra_data={"code": code})
    if result["status"] != DONE:
        status_url = url_for("api.get_job", job_id=job.job_id)
        abort(504, f"no result within {settings.predict_timeout_s:g} s; the job goes on at {status_url}",
              extra_data={"code": "timeout", "job_id": job.job_id, "status_url": status_url})
    top3 = [{"sport": p["label"], "confidence": percent(p["confidence"])} for p in result["top3"]]
    return {"sport": top3[0]["sport"], "confidence": top3[0]["confidence"], "top_3": top3}
