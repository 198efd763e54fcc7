"""Celery tasks: thin wrappers that hand the work to plain functions."""
from __future__ import annotations

from celery import shared_task

from common.queue import CLASSIFY_TASK
from worker.classify import classify_chunk
from worker.runtime import runtime


@shared_task(name=CLASSIFY_TASK, bind=True)
def classify_images(self, job_id: str, indices: list[int], model: str | None = None) -> None:
    rt = runtime(self.app)
    classify_chunk(rt.jobs, rt.classifier_for(model), job_id, indices, rt.settings.max_pixels, rt.settings.max_decode_mb)
