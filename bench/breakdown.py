"""Where one image's time goes: sequential 1-image jobs on an otherwise idle service, each split
at the timestamps the job record carries (created_at, written by the web process once the job is
stored; finished_at, written by the worker as it writes the result). The worker's own time per
chunk comes from its log (`duration_s` of each "chunk written" line: from taking the batch to
writing it), so what lies between it and created->finished is the hand-off: the listing, and the
wake of the worker process lingering on the list (or, if none lingers, Celery's wake-up)."""
from __future__ import annotations

import re
import statistics
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urljoin

import requests

from bench.client import check_job
from bench.images import Photo

STAGES = ("client -> job stored", "job stored -> result written", "result written -> client has it", "total")


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def latency_breakdown(base_url: str, photos: list[Photo], jobs: int, worker_log: Path) -> dict:
    """Median milliseconds of each stage over `jobs` jobs, and of the Celery task itself."""
    spans = {stage: [] for stage in STAGES}
    chunks_before = len(_chunk_seconds(worker_log))
    with requests.Session() as session:
        for i in range(jobs):
            photo = photos[i % len(photos)]
            sent = time.time()
            response = session.post(f"{base_url}/api/v1/jobs", files=[("file", (photo.name, photo.data, "image/jpeg"))], timeout=60)
            response.raise_for_status()
            job = session.get(urljoin(base_url, response.json()["status_url"]), params={"wait": 30}, timeout=60).json()
            received = time.time()
            check_job(job, 1)
            created, finished = _seconds(job["created_at"]), _seconds(job["finished_at"])
            for stage, span in zip(STAGES, (created - sent, finished - created, received - finished, received - sent)):
                spans[stage].append(span)
    medians = {stage: statistics.median(values) * 1000 for stage, values in spans.items()}
    chunks = _chunk_seconds(worker_log)[chunks_before:]
    medians["chunk classified (worker log)"] = statistics.median(chunks) * 1000 if chunks else float("nan")
    return {"jobs": jobs, "median_ms": medians}


def _chunk_seconds(log: Path) -> list[float]:
    text = log.read_text() if log.exists() else ""
    return [float(s) for s in re.findall(r"chunk written: .*duration_s=([0-9.]+)", text)]
