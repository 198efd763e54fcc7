"""Load: 1,000 images from 20 concurrent clients over real HTTP (gunicorn), with real workers.
Nothing may be lost, nothing may answer 5xx, and memory stays bounded. Speed is not asserted
here (that is `make bench`)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from harness import WebServer, Worker, valid_images, wait_for

CLIENTS, JOBS_PER_CLIENT, IMAGES_PER_JOB = 20, 10, 5  # 1,000 images


def tree_rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


@pytest.fixture
def served(settings, worker, tmp_path):
    web = WebServer(settings, tmp_path / "web.log", {"RATE_LIMIT": "", "WEB_PROCESSES": "2"}).start()
    extra = Worker(settings, tmp_path / "worker2.log").start()  # two workers, as `--scale worker=2`
    yield web, [worker, extra]
    extra.stop()
    web.stop()


def run_client(url: str, photos: list) -> list[tuple[int, dict | None, list]]:
    """One client: submits its jobs one after another and long-polls each; returns what it saw."""
    session, seen = requests.Session(), []
    for start in range(0, len(photos), IMAGES_PER_JOB):
        batch = photos[start:start + IMAGES_PER_JOB]
        files = [("file", (path.name, path.read_bytes())) for path, _ in batch]
        response = session.post(f"{url}/api/v1/jobs", files=files, timeout=60)
        job = None
        if response.status_code == 202:
            status_url = url + response.json()["status_url"]
            job = wait_for(lambda: (j := session.get(status_url, params={"wait": 30}, timeout=60).json())["status"] == "done" and j,
                           300, "a job under load", interval=0)
        seen.append((response.status_code, job, batch))
    return seen


def test_thousand_images_from_twenty_clients(served):
    web, workers = served
    photos = valid_images(500) * 2  # every valid photo twice: both copies must get the same answer
    share = len(photos) // CLIENTS
    peaks = {"web": 0.0, "worker": 0.0}
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(run_client, web.url, photos[i * share:(i + 1) * share]) for i in range(CLIENTS)]
        while not all(f.done() for f in futures):
            peaks["web"] = max(peaks["web"], tree_rss_mb(web.process.pid))
            peaks["worker"] = max(peaks["worker"], max(tree_rss_mb(w.process.pid) for w in workers))
            time.sleep(0.2)
        seen = [item for f in futures for item in f.result()]
    statuses = [status for status, _, _ in seen]
    assert statuses == [202] * (CLIENTS * JOBS_PER_CLIENT), f"not all accepted: {sorted(set(statuses))}"
    answers: dict[str, str] = {}
    correct = total = 0
    for _, job, batch in seen:
        assert job["progress"] == {"done": len(batch), "failed": 0, "total": len(batch)}
        for result, (path, label) in zip(job["results"], batch):
            assert result["filename"] == path.name
            top1 = result["top3"][0]["label"]
            assert answers.setdefault(str(path), top1) == top1, f"{path} got two different answers"
            correct += top1 == label
            total += 1
    assert total == 1000
    assert correct / total >= 0.93, f"top-1 under load {correct / total:.1%}"
    print(f"\nload: 1000 images, 20 clients, top-1 {correct / total:.1%}, peak RSS web {peaks['web']:.0f} MB, "
          f"worker {peaks['worker']:.0f} MB (per worker, pool included)")
    assert peaks["web"] < 1024 and peaks["worker"] < 1024
