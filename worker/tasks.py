"""Celery tasks: thin wrappers that hand the work to plain functions."""
from __future__ import annotations

from celery import shared_task

from common.queue import CLASSIFY_TASK, DRAIN_TASK, wake
from worker.classify import classify_chunk, drain
from worker.runtime import runtime


@shared_task(name=CLASSIFY_TASK, bind=True)
def classify_images(self, job_id: str, indices: list[int]) -> None:
    """One chunk alone: a heavy image's."""
    rt = runtime(self.app)
    classify_chunk(rt.jobs, rt.classifier, job_id, indices, rt.settings.max_pixels, rt.settings.max_decode_mb)


@shared_task(name=DRAIN_TASK, bind=True)
def classify_waiting(self, queue: str) -> None:
    """A wake-up: classifies `queue`'s ready chunks in batches across jobs until none wait."""
    rt = runtime(self.app)
    drain(rt.jobs, rt.classifier, queue, self.request.id, rt.batching, lambda: wake(self.app, queue))
