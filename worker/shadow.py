"""A shadow task's work: classify a chunk's copies with the shadow model and count, against the
job's own results, how many top-1 answers agree (common/shadow.py). Plain logic, no broker."""
from __future__ import annotations

from common import shadow
from common.jobs import DONE, QUEUED, RUNNING, JobStore
from common.preprocess import ImageError
from common.registry import model_id
from worker.classify import _predict, _prepare
from worker.inference import Classifier


def shadow_chunk(store: JobStore, classifier: Classifier, job_id: str, indices: list[int], max_pixels: int,
                 max_decode_mb: float) -> bool:
    """Compares the shadow model with the job's own results; False while those are not all final
    yet (the task asks again later). Images either side failed on are not compared."""
    job = store.get(job_id)
    if job is not None and any(job.images[i]["status"] in (QUEUED, RUNNING) for i in indices):
        return False
    primary = {i: job.images[i]["top3"][0]["label"] for i in indices if job and job.images[i]["status"] == DONE}
    keys = [shadow.image_key(job_id, i) for i in indices]
    copies = dict(zip(indices, store.redis.mget(keys)))
    store.redis.delete(*keys)
    inputs = {}
    for index in primary:
        try:
            inputs[job_id, index] = _prepare(copies[index], classifier, max_pixels, max_decode_mb)
        except ImageError:  # gone (expired), or the decoder refused it: nothing to compare
            pass
    answers = {i: r["top3"][0]["label"] for (_, i), r in _predict(classifier, inputs).items() if r["status"] == DONE}
    shadow.record(store.redis, model_id(classifier.card), len(answers),
                  sum(label == primary[i] for i, label in answers.items()))
    return True
