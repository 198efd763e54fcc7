"""What a worker does with the chunks it takes: plain logic, testable without a broker.

Batching across jobs: light chunks wait in their queue's ready list (common/chunks.py). A task
(`drain`) takes chunks from its head, of any jobs, up to `BATCH_IMAGES` images, and classifies them
as one inference: one round trip marks them running, one reads their images, one writes every
job's results; then it takes again, until the list is empty. It then lingers `BATCH_LINGER_S` on
the list's bell for more, so a client that sends photo after photo finds a process already
waiting (no Celery hand-off between them). Celery messages are only wake-ups (one when a chunk
lands in an empty list that no task lingers on, one from a task that leaves chunks behind), so a
burst of lone photos costs a few Celery messages instead of one each, and a lone photo still
starts at once (no waiting for more). Every guarantee stays Celery's and the job store's:
- nothing is lost on SIGKILL: a task is acknowledged after it has written what it took; when its
  process dies Celery delivers it again, and the new delivery takes the same chunks (recorded
  under its task id) before anything else; a wake-up lost otherwise is made up by the sweeper;
- a poison image fails alone: after such a death, the chunks of the batch run one by one, so
  attempts are counted per chunk (as before) and only the chunk that keeps killing workers fails,
  whichever jobs shared its batch; a bad image (not decodable) fails alone in any case;
- results stay idempotent (one script per chunk, as before); cancel ends a taken chunk unrun;
- a task drains for at most a quarter of the task time limit, then hands on with a wake-up;
- heavy chunks never join a batch: each is a task of its own on the heavy queue (common/queue.py).
Measured against the other ways (bench/RESULTS.md, issue 14): one task per chunk that also took the
chunks waiting behind it cut the inference and Redis work per image but not Celery's own per
message, which dominated for 1-image jobs. celery-batches buffers messages in the consumer and
hands the list to the pool with no time limit and no rejection when the pool process dies (it
acks on return only), so a SIGKILL mid-batch would leave its messages held until the visibility
timeout and a stuck batch would never be killed; Celery's prefetch hands a pool process one
message per run, so it cannot batch at all.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.error_codes import ErrorCode
from common.jobs import JobStore, Started, failure, success
from common.preprocess import ImageError, preprocess
from worker import metrics
from worker.inference import Classifier

log = logging.getLogger(__name__)

# Within the Redis client's socket timeout (worker/runtime.py): a longer linger waits in turns.
MAX_RING_WAIT_S = 1.0
# A chunk started this often without finishing (its process crashed, or it ran past the time
# limit) holds an image that kills workers: its images fail rather than loop forever.
MAX_ATTEMPTS = 3
Chunk = tuple[str, list[int]]  # (job id, image indices)


@dataclass(frozen=True)
class Batching:
    """How a worker process batches: images per inference, decoding limits, how long one task
    drains before it hands on (a wake-up for another), how long a taken batch is remembered, and
    how long a task lingers on an empty list."""
    max_images: int
    max_pixels: int
    max_decode_mb: float
    drain_s: float
    hold_s: int
    linger_s: float = 0.0

    @classmethod
    def for_settings(cls, settings) -> "Batching":
        return cls(settings.batch_images, settings.max_pixels, settings.max_decode_mb,
                   settings.task_time_limit_s / 4, settings.result_ttl_s, settings.batch_linger_s)


def drain(store: JobStore, classifier: Classifier, queue: str, task_id: str, batching: Batching,
          wake: Callable[[], object]) -> None:
    """Takes and classifies batches from `queue`'s ready chunks until none wait, then lingers up
    to `linger_s` for more (the list's bell wakes it) before it stops. Wakes another worker
    process whenever it leaves chunks behind (so it can stop after `drain_s`, well within the task
    time limit, and another goes on)."""
    deadline = time.monotonic() + batching.drain_s
    idle_until = None  # since the list was found empty: when this task stops lingering
    while True:
        now = time.monotonic()
        linger = max(0.0, min(deadline, idle_until or now + batching.linger_s) - now)
        batch = store.start_batch(task_id, queue, batching.max_images, batching.hold_s, linger)
        if not batch.chunks:
            if not linger:  # that take ended the lingering: the next chunk listed brings a wake-up
                return
            idle_until = idle_until or now + linger
            store.chunks.await_ring(queue, min(linger, MAX_RING_WAIT_S))
            continue
        idle_until = None
        metrics.batch_begins()
        if batch.left:
            _safely(wake)
        if batch.redelivered:
            classify_taken(store, classifier, batch.chunks, True, task_id, batching.max_pixels, batching.max_decode_mb)
        else:
            classify_started(store, classifier, batch.chunks, batch.starts, batching.max_pixels,
                             batching.max_decode_mb, task_id)
        if time.monotonic() > deadline:  # what is left was handed on above
            return


def _safely(wake: Callable[[], object]) -> None:
    """A wake-up the broker refuses costs speed, not work: this task drains on, and the sweeper
    wakes a list nobody takes from."""
    try:
        wake()
    except Exception:
        log.warning("could not send a wake-up", exc_info=True)


def classify_chunk(store: JobStore, classifier: Classifier, job_id: str, indices: list[int], max_pixels: int,
                   max_decode_mb: float = math.inf) -> None:
    """Classifies one chunk alone (a heavy image's, or one of a batch run one by one)."""
    classify_batch(store, classifier, [(job_id, indices)], max_pixels, max_decode_mb)


def classify_taken(store: JobStore, classifier: Classifier, chunks: list[Chunk], redelivered: bool,
                   task_id: str, max_pixels: int, max_decode_mb: float = math.inf) -> None:
    """A task's batch as one inference; taken again after its process died, chunk by chunk, so
    that a chunk whose image kills workers reaches its attempt limit alone."""
    if redelivered and len(chunks) > 1:
        log.warning("task %s: running the %d chunks of a batch that stopped a worker one by one", task_id, len(chunks))
        for chunk in chunks:
            classify_batch(store, classifier, [chunk], max_pixels, max_decode_mb)
        store.finish_all([], task_id)
    else:
        classify_batch(store, classifier, chunks, max_pixels, max_decode_mb, task_id)


def classify_batch(store: JobStore, classifier: Classifier, chunks: list[Chunk], max_pixels: int,
                   max_decode_mb: float = math.inf, task_id: str | None = None) -> None:
    """Classifies chunks of any jobs in one batched inference; each bad image fails alone.
    Redis errors propagate (the job store's client retries them); nothing else escapes."""
    starts = store.mark_all_running(chunks)
    images = store.all_images([(job_id, i) for (job_id, _), s in zip(chunks, starts) if s for i in s.indices])
    read = iter(images)
    with_images = [None if s is None else (s, [next(read) for _ in s.indices]) for s in starts]
    classify_started(store, classifier, chunks, with_images, max_pixels, max_decode_mb, task_id)


def classify_started(store: JobStore, classifier: Classifier, chunks: list[Chunk], starts: list, max_pixels: int,
                     max_decode_mb: float, task_id: str | None = None) -> None:
    """classify_batch once the chunks are started: `starts` holds each one's Started and its
    images' bytes (None for an expired job). Writes every result in one round trip."""
    ends, runnable = [], []
    for (job_id, indices), start in zip(chunks, starts):
        end = _end_unrun(job_id, indices, start and start[0])
        if end is not None:
            ends.append(end)
        elif start is not None:
            runnable.append((job_id, indices, start[0].indices, start[1]))
    results = _classify(classifier, runnable, max_pixels, max_decode_mb)
    ends += [(job_id, indices, {i: results[job_id, i] for i in todo}, classifier.identity)
             for job_id, indices, todo, _ in runnable]
    for (job_id, indices, chunk_results, model), written in zip(ends, store.finish_all(ends, task_id)):
        if chunk_results:
            metrics.record_chunk(job_id, indices, model, chunk_results, written)


def _end_unrun(job_id: str, indices: list[int], started: Started | None) -> tuple | None:
    """How a chunk that must not run ends (a finish_all entry), or None to run it (or, for an
    expired job, to leave it: there is nothing left to write)."""
    if started is None:
        log.warning("job %s expired before its images %s ran", job_id, indices)
        return None
    if not started.indices:  # the job was cancelled (or the chunk already finished): end it, unrun
        return job_id, indices, {}, None
    if started.attempt > MAX_ATTEMPTS:
        message = f"classifying this batch stopped a worker {MAX_ATTEMPTS} times; one of its images is to blame"
        return job_id, indices, {i: failure(ErrorCode.WORKER_CRASHED, message) for i in indices}, None
    return None


def _classify(classifier: Classifier, runnable: list[tuple], max_pixels: int,
              max_decode_mb: float) -> dict[tuple[str, int], dict]:
    """Each image's final record, keyed (job id, index): decoded one by one, inferred together."""
    results, inputs = {}, {}
    for job_id, _, todo, images in runnable:
        for image, data in zip(((job_id, i) for i in todo), images):
            try:
                inputs[image] = _prepare(data, classifier, max_pixels, max_decode_mb)
            except ImageError as exc:
                results[image] = failure(exc.code, exc.message)
            except Exception:  # a decoder bug must cost one image, never the worker
                log.exception("job %s image %d: unexpected decoding error", *image)
                results[image] = failure(ErrorCode.DECODE_ERROR, "the image could not be processed")
    return results | _predict(classifier, inputs)


def _predict(classifier: Classifier, inputs: dict[tuple[str, int], np.ndarray]) -> dict[tuple[str, int], dict]:
    if not inputs:
        return {}
    try:
        predictions = classifier.predict(np.stack(list(inputs.values())))
    except Exception:  # the runtime failing must end these images visibly, not leave them running
        log.exception("jobs %s: inference failed", sorted({job_id for job_id, _ in inputs}))
        message = "the model could not classify this image"
        return {image: failure(ErrorCode.INFERENCE_ERROR, message) for image in inputs}
    return {image: success(prediction) for image, prediction in zip(inputs, predictions)}


def _prepare(data: bytes | None, classifier: Classifier, max_pixels: int, max_decode_mb: float) -> np.ndarray:
    if data is None:
        raise ImageError(ErrorCode.IMAGE_EXPIRED, "the image expired before a worker could classify it")
    return preprocess(data, classifier.prep, max_pixels, max_decode_mb)
