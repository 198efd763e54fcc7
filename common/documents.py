"""A stored job as REST v1 shows it: the job's status rolled up from its images', and the model
this deployment serves named until a worker records the one that classified the images. Here in
common/ because the web app answers with it and the webhook delivery (a worker) posts it."""
from __future__ import annotations

from collections import Counter

from common.jobs import DONE, FAILED, QUEUED, RUNNING, Job


def job_status(job: Job, counts: Counter) -> str:
    if job.finished:
        return DONE
    # Images refused on arrival are final but were never worked on: they do not count as started.
    return RUNNING if counts[RUNNING] or counts[DONE] else QUEUED


def job_document(job: Job, served_model: dict) -> dict:
    counts = Counter(image["status"] for image in job.images)
    return {
        "job_id": job.job_id,
        "status": job_status(job, counts),
        "progress": {"done": counts[DONE], "failed": counts[FAILED], "total": len(job.images)},
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "model": job.model or served_model,
        "callback": job.callback,
        "results": [
            {"index": i, "filename": name, "status": image["status"], "top3": image.get("top3", []),
             "confident": image.get("confident"), "error": image.get("error")}
            for i, (name, image) in enumerate(zip(job.filenames, job.images))
        ],
    }
