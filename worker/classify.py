"""What a worker does with one chunk of a job: plain logic, testable without a broker."""
from __future__ import annotations

import logging
import math

import numpy as np

from common.error_codes import ErrorCode
from common.jobs import JobStore, failure, success
from common.preprocess import ImageError, preprocess
from worker import metrics
from worker.inference import Classifier

log = logging.getLogger(__name__)

# A chunk started this often without finishing (its process crashed, or it ran past the time
# limit) holds an image that kills workers: its images fail rather than loop forever.
MAX_ATTEMPTS = 3


def classify_chunk(store: JobStore, classifier: Classifier, job_id: str, indices: list[int], max_pixels: int,
                   max_decode_mb: float = math.inf) -> None:
    """Classifies the chunk's images in one batched inference; each bad image fails alone.
    Redis errors propagate (the job store's client retries them); nothing else escapes."""
    started = store.mark_running(job_id, indices)
    if started is None:
        log.warning("job %s expired before its images %s ran", job_id, indices)
        return
    if not started.indices:  # the job was cancelled (or the chunk already finished): end it, unrun
        store.finish(job_id, {}, chunks=[indices])
        return
    if started.attempt > MAX_ATTEMPTS:
        message = f"classifying this batch stopped a worker {MAX_ATTEMPTS} times; one of its images is to blame"
        crashed = {index: failure(ErrorCode.WORKER_CRASHED, message) for index in indices}
        metrics.record_chunk(job_id, indices, None, crashed, store.finish(job_id, crashed, chunks=[indices]))
        return
    results, inputs = {}, {}
    for index, data in zip(started.indices, store.images(job_id, started.indices)):
        try:
            inputs[index] = _prepare(data, classifier, max_pixels, max_decode_mb)
        except ImageError as exc:
            results[index] = failure(exc.code, exc.message)
        except Exception:  # a decoder bug must cost one image, never the worker
            log.exception("job %s image %d: unexpected decoding error", job_id, index)
            results[index] = failure(ErrorCode.DECODE_ERROR, "the image could not be processed")
    results |= _predict(classifier, inputs, job_id)
    written = store.finish(job_id, results, classifier.identity, [indices])
    metrics.record_chunk(job_id, indices, classifier.identity, results, written)


def _predict(classifier: Classifier, inputs: dict[int, np.ndarray], job_id: str) -> dict[int, dict]:
    if not inputs:
        return {}
    try:
        predictions = classifier.predict(np.stack(list(inputs.values())))
    except Exception:  # the runtime failing must end these images visibly, not leave them running
        log.exception("job %s: inference failed", job_id)
        message = "the model could not classify this image"
        return {index: failure(ErrorCode.INFERENCE_ERROR, message) for index in inputs}
    return {index: success(prediction) for index, prediction in zip(inputs, predictions)}


def _prepare(data: bytes | None, classifier: Classifier, max_pixels: int, max_decode_mb: float) -> np.ndarray:
    if data is None:
        raise ImageError(ErrorCode.IMAGE_EXPIRED, "the image expired before a worker could classify it")
    return preprocess(data, classifier.prep, max_pixels, max_decode_mb)
