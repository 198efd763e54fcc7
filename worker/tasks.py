"""Celery tasks: thin wrappers that hand the work to plain functions."""
from __future__ import annotations

from celery import shared_task

from common.queue import CLASSIFY_TASK
from worker.classify import classify_chunk
from worker.runtime import runtime


@shared_task(name=CLASSIFY_TASK, bind=True)
def classify_images(self, job_id: str, indices: list[int], model: str | None = None) -> None:
    rt = runtime(self.app)
    classifier = rt.classifier_for(model)  # the model whose queue this came from
    classify_chunk(rt.jobs, classifier, job_id, indices, rt.settings.max_pixels, rt.settings.max_decode_mb)
