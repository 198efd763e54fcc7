"""Security promises with the real stack: JSON-only messages, a password-protected Redis (plain or
over TLS) whose password never reaches the logs, uploaded file names that stay names."""
from __future__ import annotations

import dataclasses
import io
import uuid

import pytest
from redis import Redis

from common.jobs import QUEUED, JobStore
from common.queue import CELERY_QUEUE, CLASSIFY_TASK, make_celery
from harness import RedisServer, Worker, valid_images, wait_for
from webapp import create_app

PASSWORD = "correct-horse-battery-staple"
UNACKED = "unacked"  # kombu's hash of delivered messages not yet acknowledged (acks late: until done)


@pytest.fixture(params=["redis", "rediss"])
def private_stack(request, settings, tmp_path):
    """Redis with a password (and TLS for rediss://), a worker and the app, all given its URL."""
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls=request.param == "rediss").start()
    mine = dataclasses.replace(settings, redis_url=server.url)
    worker = Worker(mine, tmp_path / "worker.log").start()
    yield create_app(mine).test_client(), worker, mine
    worker.stop()
    server.stop()


def submit(client, files) -> str:
    response = client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 202
    return response.get_json()["status_url"]


def test_password_redis_works_and_stays_out_of_logs(private_stack):
    client, worker, _ = private_stack
    path, _ = valid_images(1)[0]
    job = client.get(submit(client, [(io.BytesIO(path.read_bytes()), path.name)]) + "?wait=30").get_json()
    assert job["status"] == "done" and job["results"][0]["status"] == "done"
    assert client.get("/ready").get_json()["status"] == "ready"
    assert PASSWORD not in worker.log.read_text()


def test_worker_refuses_pickled_messages(private_stack):
    client, worker, settings = private_stack
    store = JobStore(Redis.from_url(settings.redis_url), settings.result_ttl_s)
    job_id = str(uuid.uuid4())
    store.create(job_id, ["a.jpg"], {0: valid_images(1)[0][0].read_bytes()}, {})
    sender = make_celery(settings)
    sender.conf.accept_content = ["json", "pickle"]  # a hostile or misconfigured producer
    sender.send_task(CLASSIFY_TASK, args=[job_id, [0]], serializer="pickle")
    # Taken off the queue and not held as unacknowledged: refused, or run to its end.
    wait_for(lambda: store.redis.llen(CELERY_QUEUE) == 0 and store.redis.hlen(UNACKED) == 0, 30,
             "the worker to take the pickled message")
    assert store.get(job_id).images == [{"status": QUEUED}]  # refused: never executed
    assert worker.process.poll() is None  # and the worker is unharmed:
    make_celery(settings).send_task(CLASSIFY_TASK, args=[job_id, [0]])
    assert client.get(f"/api/v1/jobs/{job_id}?wait=30").get_json()["status"] == "done"
    assert store.redis.hget(store.key(job_id), "attempts:0") == b"1"  # only the JSON task ever started it


def test_file_names_are_names_not_paths(client):
    path, _ = valid_images(1)[0]
    data = path.read_bytes()
    files = [(io.BytesIO(data), "../../etc/passwd.jpg"), (io.BytesIO(data), "/var/www/beach.jpg"),
             (io.BytesIO(data), "ok\x00\x1b[31m.jpg")]
    job = client.get(submit(client, files) + "?wait=30").get_json()
    assert [r["filename"] for r in job["results"]] == ["passwd.jpg", "beach.jpg", "ok[31m.jpg"]
