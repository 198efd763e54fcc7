"""Celery tasks: thin wrappers that hand the work to plain functions."""
from __future__ import annotations

from celery import shared_task

from common.queue import CLASSIFY_TASK
from worker.classify import classify_chunk, classify_taken
from worker.runtime import runtime


@shared_task(name=CLASSIFY_TASK, bind=True)
def classify_images(self, job_id: str, indices: list[int], batch_from: str | None = None) -> None:
    """One chunk's task. With `batch_from` (a light chunk's queue) it takes its chunk with the
    chunks waiting behind it and classifies them together, or ends at once if another task took
    its chunk; without (a heavy image), it runs its chunk alone."""
    rt, s = runtime(self.app), runtime(self.app).settings
    if batch_from is None:
        classify_chunk(rt.jobs, rt.classifier, job_id, indices, s.max_pixels, s.max_decode_mb)
        return
    redelivered, chunks = rt.jobs.chunks.take(self.request.id, batch_from, job_id, indices,
                                              max(s.batch_images, len(indices)), s.result_ttl_s)
    if chunks:
        classify_taken(rt.jobs, rt.classifier, chunks, redelivered, self.request.id, s.max_pixels, s.max_decode_mb)
