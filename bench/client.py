"""Load the way real clients make it: each client is a thread with its own HTTP session (a kept-
alive connection) that sends its next request as soon as its last one is answered, so `clients`
requests are always in flight. A fixed list of work per phase, not a duration, keeps runs
comparable and bounded. Every answer is checked; a failure is counted and reported, never dropped."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin

import numpy as np
import requests

from bench.images import Photo
from common.jobs import DONE

# Bounds on a broken service: a job not done in time fails, and once a phase runs past its
# deadline the work not yet sent fails unsent, so a dead worker costs minutes, not hours.
JOB_DEADLINE_S = 120
PHASE_DEADLINE_S = 300
Send = Callable[[requests.Session, list[Photo]], None]


@dataclass
class LoadResult:
    clients: int
    images: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    failures: int = 0
    resets: int = 0  # connections the server reset (counted among the failures too)
    server_errors: int = 0  # 5xx answers (counted among the failures too)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """images/s over the whole phase, and latency percentiles of the requests that succeeded."""
        pct = np.percentile(self.latencies_s, [50, 95, 99]) * 1000 if self.latencies_s else [float("nan")] * 3
        return {"clients": self.clients, "requests": len(self.latencies_s) + self.failures, "images": self.images,
                "failures": self.failures, "resets": self.resets, "server_errors": self.server_errors,
                "images_per_s": self.images / self.wall_s if self.wall_s else 0.0,
                "p50_ms": float(pct[0]), "p95_ms": float(pct[1]), "p99_ms": float(pct[2]),
                "errors": sorted(set(self.errors))[:5]}


def tally(summaries: Iterable[dict]) -> dict[str, int]:
    """Failed requests, connection resets and 5xx answers over several phases' summaries."""
    summaries = list(summaries)
    return {key: sum(s[key] for s in summaries) for key in ("failures", "resets", "server_errors")}


def run_load(work: list[list[Photo]], clients: int, send: Send) -> LoadResult:
    """Sends every item of `work` once, through `clients` concurrent clients. The threads are
    daemons so that a Ctrl-C in the main thread ends the run without waiting on a long poll."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in work:
        todo.put(item)
    result, lock = LoadResult(clients), threading.Lock()
    start = time.perf_counter()
    deadline = time.monotonic() + PHASE_DEADLINE_S
    threads = [threading.Thread(target=_client, args=(todo, send, deadline, result, lock), daemon=True)
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - start
    return result


def _client(todo: queue.SimpleQueue, send: Send, deadline: float, result: LoadResult, lock: threading.Lock) -> None:
    with requests.Session() as session:
        while True:
            try:
                photos = todo.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            error = _send(session, photos, send, deadline)
            _record(result, lock, len(photos), time.perf_counter() - start, error)


def _send(session: requests.Session, photos: list[Photo], send: Send, deadline: float) -> str | None:
    """None if the request succeeded, else why not."""
    if time.monotonic() > deadline:
        return f"not sent: the phase ran past {PHASE_DEADLINE_S} s"
    try:
        send(session, photos)
        return None
    except Exception as exc:  # any failure is the server's (or the network's): count it
        return f"{type(exc).__name__}: {exc}"[:200]


def _record(result: LoadResult, lock: threading.Lock, images: int, latency_s: float, error: str | None) -> None:
    with lock:
        if error is None:
            result.images += images
            result.latencies_s.append(latency_s)
        else:
            result.failures += 1
            result.resets += "ConnectionResetError" in error or "Connection reset" in error
            result.server_errors += error.startswith("HTTPError: 5")
            result.errors.append(error)


def _files(photos: list[Photo]) -> list[tuple]:
    return [("file", (photo.name, photo.data, "image/jpeg")) for photo in photos]


def predict(base_url: str) -> Send:
    """The baseline's contract: one image per POST /predict, the answer in the response."""
    def send(session: requests.Session, photos: list[Photo]) -> None:
        response = session.post(f"{base_url}/predict", files=_files(photos), timeout=60)
        response.raise_for_status()
        if len(response.json()["top_3"]) != 3:
            raise ValueError("answer without three predictions")
    return send


def peer_predict(base_url: str) -> Send:
    """The peer's contract (bench.peer): one image per POST /predict, its top 3 in the answer."""
    def send(session: requests.Session, photos: list[Photo]) -> None:
        response = session.post(f"{base_url}/predict", files=_files(photos), timeout=60)
        response.raise_for_status()
        if len(response.json()["top3"]) != 3:
            raise ValueError("answer without three predictions")
    return send


def submit_and_wait(base_url: str) -> Send:
    """Our contract: POST /api/v1/jobs?wait=30, which answers with the job once done (200), else
    accepts it (202) and the status URL is long-polled until it is. Latency is therefore
    submit-to-done, what a client waiting for its results sees."""
    def send(session: requests.Session, photos: list[Photo]) -> None:
        response = session.post(f"{base_url}/api/v1/jobs", params={"wait": 30}, files=_files(photos), timeout=60)
        response.raise_for_status()
        if response.status_code == 200:
            check_job(response.json(), len(photos))
            return
        status_url = urljoin(base_url, response.json()["status_url"])
        check_job(wait_done(session, status_url), len(photos))
    return send


def wait_done(session: requests.Session, status_url: str) -> dict:
    """Long polls (each at most 30 s) until the job is done or its deadline passes."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while True:
        response = session.get(status_url, params={"wait": 30}, timeout=60)
        response.raise_for_status()
        job = response.json()
        if job["status"] == DONE or time.monotonic() > deadline:
            return job


def check_job(job: dict, images: int) -> None:
    """Done means every image done with three predictions; a failed image fails the job here."""
    bad = [r["index"] for r in job["results"] if r["status"] != DONE or len(r["top3"]) != 3]
    if job["status"] != DONE or len(job["results"]) != images or bad:
        raise ValueError(f"job {job['job_id']} is {job['status']}; images not done: {bad[:5]}")
