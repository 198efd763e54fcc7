"""The ceiling: decode, preprocess and infer in this one process, with no HTTP, Redis or queue.

It uses the worker's own Classifier and preprocessing with the thread count a single worker
process gets, so the gap between this number and the service's is what the service's plumbing
costs, not a difference in the model or in how it is run.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.images import Photo, batches
from common.preprocess import preprocess
from common.settings import Settings
from worker.inference import Classifier, default_threads

MAX_PIXELS = Settings().max_pixels
# Errors only: the INT8 graph's harmless "unused initializer" warnings would bury the results.
ort.set_default_logger_severity(3)


def load_classifier(model_path: str) -> Classifier:
    """As a worker with WORKER_PROCESSES=1 loads it: one session using every core."""
    return Classifier(model_path, str(Path(model_path).with_suffix(".json")), default_threads(1))


def classify(classifier: Classifier, group: list[Photo]) -> list[list[dict]]:
    """One batch, exactly as the worker's classify_chunk does it: decode each, stack, infer."""
    arrays = [preprocess(photo.data, classifier.prep, MAX_PIXELS) for photo in group]
    return classifier.predict(np.stack(arrays))


def images_per_second(classifier: Classifier, photos: list[Photo], batch: int, total: int) -> float:
    """Throughput over `total` images; one batch first, untimed, because ONNX Runtime sizes its
    memory on the first run of each shape and that one-off cost is not throughput."""
    groups = batches(photos, batch, total)
    classify(classifier, groups[0])
    start = time.perf_counter()
    for group in groups:
        classify(classifier, group)
    return len(groups) * batch / (time.perf_counter() - start)


def decode_ms(data: bytes, classifier: Classifier, repeats: int) -> float:
    """Median time to turn one upload into a model input; the median, since one run disturbed by
    another process on a shared machine should not move the figure."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        preprocess(data, classifier.prep, MAX_PIXELS)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_ceiling(models: list[str], photos: list[Photo], total: int,
                    large: bytes, repeats: int) -> dict:
    """images/s for each model at batch 1 (one image per request) and batch 16 (one job chunk),
    and the cost of preprocessing one large JPEG and one photo of the set."""
    rows = []
    for path in models:
        classifier = load_classifier(path)
        precision = classifier.card["precision"]
        for batch in (1, 16):
            rate = images_per_second(classifier, photos, batch, total)
            rows.append({"precision": precision, "model": Path(path).name, "batch": batch, "images_per_s": rate})
            print(f"  ceiling {precision} batch {batch}: {rate:.1f} images/s", flush=True)
    classifier = load_classifier(models[0])
    preprocess_ms = {"large_4000x3000": decode_ms(large, classifier, repeats),
                     "photo_224x224": decode_ms(photos[0].data, classifier, repeats * 10)}
    return {"threads": default_threads(1), "rows": rows, "preprocess_ms": preprocess_ms}
