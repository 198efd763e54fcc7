"""Sample documents that /docs shows for each response; tests/test_docs.py checks each one
against its schema, so a sample cannot drift from the contract."""
from __future__ import annotations

from common.settings import Settings

JOB_ID = "0b6f2c1e-5d4a-4f7e-9c3b-2a8d1e6f4b90"
STATUS_URL = f"/api/v1/jobs/{JOB_ID}"
MODEL = {"name": "sports100-lite0-fused-int8", "version": "2.1.0"}
MODEL_ID = "sports100-lite0-fused-int8@2.1.0"
CANDIDATE_ID = "sports100-lite0-int8@1.0.0"

# Uploads are multipart files: these examples say how to send them (Swagger UI shows file pickers instead).
UPLOAD_CURL = "curl -F file=@surf.jpg -F file=@match.png http://localhost:8000/api/v1/jobs"
CALLBACK_URL = "https://batch.example.com/hooks/sportclf"
IDEMPOTENCY_KEY = "5f0c7a52-8d1e-4b36-9a0e-3c2b7d41e6f8"
UPLOAD_CALLBACK_CURL = (f"curl -H 'Idempotency-Key: {IDEMPOTENCY_KEY}' -F file=@surf.jpg "
                        f"-F callback_url={CALLBACK_URL} http://localhost:8000/api/v1/jobs")
UPLOAD = {"two photos": {"summary": "two photos in one request", "description": f"`{UPLOAD_CURL}`"},
          "with a callback": {"summary": "a photo, a webhook, and a key that makes a retry safe",
                              "description": f"`{UPLOAD_CALLBACK_CURL}`"}}
PREDICT_CURL = "curl -F file=@surf.jpg http://localhost:8000/predict"
PREDICT_UPLOAD = {"one photo": {"summary": "one photo", "description": f"`{PREDICT_CURL}`"}}

JOB_ACCEPTED = {"job_id": JOB_ID, "status": "queued", "total": 2, "status_url": STATUS_URL}

JOB_DONE = {
    "job_id": JOB_ID,
    "status": "done",
    "progress": {"done": 1, "failed": 1, "total": 2},
    "created_at": "2026-11-27T09:30:00.120000+00:00",
    "finished_at": "2026-11-27T09:30:00.480000+00:00",
    "model": MODEL,
    "callback": {"url": CALLBACK_URL, "status": "delivered", "attempts": 1, "last_error": None},
    "results": [
        {"index": 0, "filename": "surf.jpg", "status": "done", "error": None, "top3": [
            {"label": "surfing", "display_name": "Surfing", "confidence": 0.962},
            {"label": "water polo", "display_name": "Water Polo", "confidence": 0.011},
            {"label": "sailboat racing", "display_name": "Sailboat Racing", "confidence": 0.006}], "confident": True},
        {"index": 1, "filename": "notes.txt", "status": "failed", "top3": [], "confident": None,
         "error": {"code": "not_an_image",
                   "message": "not a readable image (expected one of JPEG, PNG, GIF, WEBP, BMP, TIFF)"}},
    ],
}

JOB_CANCELLED = JOB_DONE | {"progress": {"done": 1, "failed": 0, "total": 2}, "results": [
    JOB_DONE["results"][0], {"index": 1, "filename": "match.png", "status": "cancelled", "top3": [], "confident": None,
                                                  "error": None}]}

CLASSES = {"classes": ["air hockey", "ampute football", "archery"],
           "display_names": {"air hockey": "Air Hockey", "ampute football": "Amputee Football", "archery": "Archery"}}

LIMITS = {"max_images_per_job": Settings.max_images_per_job, "max_image_bytes": Settings.max_image_bytes,
          "max_request_bytes": Settings.max_request_bytes, "max_pixels": Settings.max_pixels}

PREDICTION = {"sport": "surfing", "confidence": 96.2, "top_3": [
    {"sport": "surfing", "confidence": 96.2}, {"sport": "water polo", "confidence": 1.1},
    {"sport": "sailboat racing", "confidence": 0.6}], "confident": True}

MODEL_INFO = MODEL | {"architecture": "efficientnet-lite0 fine-tuned + efficientnet-lite0 ImageNet probe, fused", "precision": "int8",
                      "accuracy": {"images": 500, "top1": 0.978, "top3": 1.0},
                      "real_world_accuracy": {"images": 390, "top1": 0.741, "top3": 0.8641}}
HEALTH = {"status": "ok"}
READY = {"status": "ready", "redis": "ok", "workers": 2, "model": MODEL, "problems": [],
         "models": [{"id": MODEL_ID, "share": 100.0, "workers": 2, "ready": True}]}
NOT_READY = {"status": "not_ready", "redis": "ok", "workers": 0, "model": None,
             "models": [{"id": MODEL_ID, "share": 100.0, "workers": 0, "ready": False}],
             "problems": ["no worker has announced a loaded model yet"]}

ROUTING_CANARY = {"canary": {"model": CANDIDATE_ID, "share": 10}}
ROUTING = {"active": MODEL_ID, "canary": {"model": CANDIDATE_ID, "share": 10.0}, "shadow": None, "source": "redis"}
MODELS = {"routing": ROUTING, "models": [
    MODEL_INFO | {"id": MODEL_ID, "share": 90.0, "workers": 2, "shadow": None},
    {"id": CANDIDATE_ID, "name": "sports100-lite0-int8", "version": "1.0.0", "architecture": "efficientnet-lite0",
     "precision": "int8", "accuracy": {"images": 500, "top1": 0.974, "top3": 1.0},
     "real_world_accuracy": {"images": 390, "top1": 0.659, "top3": 0.7795}, "share": 10.0, "workers": 1,
     "shadow": None}]}

METRICS = """\
# HELP sportclf_images_submitted_total Images in accepted jobs
# TYPE sportclf_images_submitted_total counter
sportclf_images_submitted_total 16.0
# HELP sportclf_queue_depth Tasks waiting in each Celery queue
# TYPE sportclf_queue_depth gauge
sportclf_queue_depth{queue="celery"} 0.0
"""
