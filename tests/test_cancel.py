"""DELETE /api/v1/jobs/<id> with a real worker: queued images end `cancelled` and are never
classified; a finished job keeps its results; cancelling again changes nothing."""
from __future__ import annotations

import io
import uuid

import pytest
from redis import Redis

from common.chunks import PENDING
from common.jobs import CANCELLED, DONE, FAILED, JobStore
from common.queue import CELERY_QUEUE
from harness import Worker, valid_images, wait_for
from webapp import create_app


def submit(client, files: list[tuple[bytes, str]]) -> str:
    response = client.post("/api/v1/jobs", data={"file": [(io.BytesIO(data), name) for data, name in files]},
                           content_type="multipart/form-data")
    assert response.status_code == 202
    return response.get_json()["status_url"]


def photos(count: int) -> list[tuple[bytes, str]]:
    return [(path.read_bytes(), path.name) for path, _ in valid_images(count)]


def test_a_cancelled_job_is_never_classified(fresh_settings, tmp_path):
    """Cancelled while no worker consumes its queue; the worker started afterwards takes its task
    and ends it without writing a result."""
    settings = fresh_settings(chunk_size=2)
    client = create_app(settings).test_client()
    status_url = submit(client, [*photos(3), (b"not a photo", "notes.txt")])
    cancelled = client.delete(status_url)
    assert cancelled.status_code == 200
    job = cancelled.get_json()
    assert job["status"] == "done" and job["finished_at"]
    assert [r["status"] for r in job["results"]] == [CANCELLED] * 3 + [FAILED]
    assert all(r["top3"] == [] for r in job["results"])
    assert job["progress"] == {"done": 0, "failed": 1, "total": 4}
    assert client.delete(status_url).get_json() == job  # again: the same answer, nothing changes

    redis = Redis.from_url(settings.redis_url)
    assert redis.llen("jobs:ready:celery") == 2 and redis.llen(CELERY_QUEUE) == 1  # its chunks and a wake-up wait
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: redis.llen(CELERY_QUEUE) == 0 and redis.hlen("unacked") == 0 and redis.zcard(PENDING) == 0
                 and redis.llen("jobs:ready:celery") == 0,
                 60, "the worker to take and end the cancelled chunks")
    finally:
        worker.stop()
    assert client.get(status_url).get_json() == job  # no result written
    job_key = JobStore.key(job["job_id"])
    assert [redis.hget(job_key, f"attempts:{i}") for i in (0, 2)] == [b"1", b"1"]  # yet the worker took both chunks


def test_a_finished_job_keeps_its_results(client):
    status_url = submit(client, photos(2))
    finished = client.get(f"{status_url}?wait=30").get_json()
    assert finished["status"] == "done"
    cancelled = client.delete(status_url)
    assert cancelled.status_code == 200 and cancelled.get_json() == finished
    assert [r["status"] for r in cancelled.get_json()["results"]] == [DONE, DONE]


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_cancelling_an_unknown_job_is_404(web_client, job_id):
    response = web_client.delete(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "job_not_found"
