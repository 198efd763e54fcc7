"""Celery tasks: thin wrappers that hand the work to plain functions."""
from __future__ import annotations

from celery import shared_task

from common.queue import CLASSIFY_TASK
from worker import celery_app
from worker.classify import classify_chunk


@shared_task(name=CLASSIFY_TASK)
def classify_images(job_id: str, indices: list[int]) -> None:
    rt = celery_app.runtime or celery_app.start_runtime()  # solo/threads pools never fork
    classify_chunk(rt.store, rt.classifier, job_id, indices, celery_app.settings.max_pixels)
