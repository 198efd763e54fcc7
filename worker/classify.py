"""What a worker does with one chunk of a job: plain logic, testable without a broker."""
from __future__ import annotations

import logging

import numpy as np

from common.jobs import JobStore, failure, success
from common.preprocess import ImageError, preprocess
from worker.inference import Classifier

log = logging.getLogger(__name__)


def classify_chunk(store: JobStore, classifier: Classifier, job_id: str, indices: list[int], max_pixels: int) -> None:
    """Classifies the chunk's images in one batched inference; each bad image fails alone."""
    if not store.mark_running(job_id, indices):
        log.warning("job %s expired before its images %s ran", job_id, indices)
        return
    results, inputs = {}, {}
    for index in indices:
        try:
            inputs[index] = _prepare(store.image(job_id, index), classifier, max_pixels)
        except ImageError as exc:
            results[index] = failure(exc.code, exc.message)
        except Exception:  # a decoder bug must cost one image, never the worker
            log.exception("job %s image %d: unexpected decoding error", job_id, index)
            results[index] = failure("decode_error", "the image could not be processed")
    if inputs:
        predictions = classifier.top3(np.stack(list(inputs.values())))
        results |= {index: success(top3) for index, top3 in zip(inputs, predictions)}
    store.finish(job_id, results, classifier.identity)


def _prepare(data: bytes | None, classifier: Classifier, max_pixels: int) -> np.ndarray:
    if data is None:
        raise ImageError("image_expired", "the image expired before a worker could classify it")
    return preprocess(data, classifier.prep, max_pixels)
