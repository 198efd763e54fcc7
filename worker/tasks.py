"""Celery tasks: thin wrappers that hand the work to plain functions. `model` names the model whose
queue a task came from (a worker may serve several)."""
from __future__ import annotations

from celery import shared_task

from common.queue import CLASSIFY_TASK, DEFAULT_MODEL, DRAIN_TASK, wake
from worker.classify import classify_chunk, drain
from worker.runtime import runtime


@shared_task(name=CLASSIFY_TASK, bind=True)
def classify_images(self, job_id: str, indices: list[int], model: str | None = None) -> None:
    """One chunk alone: a heavy image's."""
    rt = runtime(self.app)
    classify_chunk(rt.jobs, rt.classifier_for(model), job_id, indices, rt.settings.max_pixels,
                   rt.settings.max_decode_mb)


@shared_task(name=DRAIN_TASK, bind=True)
def classify_waiting(self, queue: str, model: str = DEFAULT_MODEL) -> None:
    """A wake-up: classifies `queue`'s ready chunks in batches across jobs until none wait."""
    rt = runtime(self.app)
    drain(rt.jobs, rt.classifier_for(model), queue, self.request.id, rt.batching, lambda: wake(self.app, model))
