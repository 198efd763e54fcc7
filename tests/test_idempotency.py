"""Idempotency-Key on POST /api/v1/jobs, against a real Redis (a database of its own per test, so
the jobs counted there are the test's alone) and, for the restart, real gunicorn processes."""
from __future__ import annotations

import dataclasses
import io
import json
import re
import threading

import pytest
import requests
from redis import Redis

from common.queue import make_celery
from harness import WebServer, free_port, serve, valid_images
from webapp import create_app, idempotency

KEY = "3f9a1c2e-7b4d-4e8f-a6c5-0d1e2f3a4b5c"
JOB_KEY = re.compile(rb"job:[0-9a-f-]{36}")  # a job's record (not its images' keys)


def jobs_in(settings) -> int:
    return sum(1 for key in Redis.from_url(settings.redis_url).scan_iter("job:*") if JOB_KEY.fullmatch(key))


def files(count: int = 2, start: int = 0) -> list[tuple[bytes, str]]:
    return [(path.read_bytes(), path.name) for path, _ in valid_images(count, start)]


def post(client, key: str | None, images: list[tuple[bytes, str]], **form):
    data = {"file": [(io.BytesIO(content), name) for content, name in images], **form}
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/api/v1/jobs", data=data, headers=headers, content_type="multipart/form-data")


@pytest.fixture
def isolated(fresh_settings):
    """An app over an empty database that no worker serves: submitted jobs stay queued. Webhooks
    on, to a local address (never called: no job finishes)."""
    settings = fresh_settings(webhook_secret="secret", webhook_allow_private=1)
    return settings, create_app(settings).test_client()


def test_a_repeat_answers_the_first_job(isolated):
    settings, client = isolated
    first = post(client, KEY, files())
    again = post(client, KEY, files())
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert jobs_in(settings) == 1
    other = post(client, "another-key", files())
    assert other.get_json()["job_id"] != first.get_json()["job_id"] and jobs_in(settings) == 2


@pytest.mark.parametrize("change", ["other files", "a renamed file", "a callback_url", "fewer files"])
def test_the_same_key_with_another_request_is_a_409(isolated, change):
    settings, client = isolated
    assert post(client, KEY, files()).status_code == 202
    images, form = files(), {}
    if change == "other files":
        images = files(2, start=5)
    elif change == "a renamed file":
        images[1] = (images[1][0], "renamed.jpg")
    elif change == "fewer files":
        images = images[:1]
    else:
        form = {"callback_url": "http://127.0.0.1:9/hook"}
    response = post(client, KEY, images, **form)
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert jobs_in(settings) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
def test_a_malformed_key_is_a_400(isolated, key):
    settings, client = isolated
    response = post(client, key, files(1))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_idempotency_key"
    assert jobs_in(settings) == 0


def test_concurrent_submits_with_one_key_make_one_job(fresh_settings):
    settings = fresh_settings()
    server = serve(create_app(settings))
    base = next(server)
    images, answers, start = files(), [], threading.Barrier(8)

    def submit():
        start.wait()
        data = [("file", (name, content)) for content, name in images]
        answers.append(requests.post(f"{base}/api/v1/jobs", files=data, headers={"Idempotency-Key": KEY}, timeout=60))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    next(server, None)  # stops it
    assert [a.status_code for a in answers] == [202] * 8
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(1 for a in answers if "Idempotent-Replayed" not in a.headers) == 1
    assert jobs_in(settings) == 1


def test_a_repeat_after_a_web_restart_answers_the_first_job(fresh_settings, tmp_path):
    settings = fresh_settings()
    images = [("file", (name, content)) for content, name in files()]
    answers = []
    for run in range(2):
        web = WebServer(settings, tmp_path / f"web{run}.log").start()
        try:
            answers.append(requests.post(f"{web.url}/api/v1/jobs", files=images, headers={"Idempotency-Key": KEY},
                                         timeout=60))
        finally:
            web.stop()
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["job_id"] == answers[1].json()["job_id"]
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert jobs_in(settings) == 1


def test_a_request_that_loses_the_race_creates_nothing(isolated):
    """Another request stores the key between this one's WATCH and EXEC (forced here, from another
    connection): the transaction, job included, is dropped, and the winner's job is answered."""
    settings, client = isolated
    redis, winner = Redis.from_url(settings.redis_url), {"job_id": "winner", "total": 2, "fingerprint": "f"}
    jobs = client.application.extensions["jobs"]

    def create(pipe):
        redis.set(idempotency.redis_key(KEY), json.dumps(winner))
        jobs.create("loser", ["a.jpg"], {0: b"x"}, {}, [[0]], pipe=pipe)

    with client.application.app_context():
        assert idempotency.create_once(KEY, {"job_id": "loser", "total": 1, "fingerprint": "g"}, create) == winner
    assert not redis.exists("job:loser", "job:loser:image:0")
    assert redis.zcard("jobs:pending") == 0


def test_a_submission_answered_503_forgets_its_key(isolated):
    """The job was stored but its broker refused the task (here: a broker on a port nobody serves):
    the client hears 503, so its retry with the same key makes a job rather than get that one."""
    settings, client = isolated
    refusing = create_app(settings)
    dead_broker = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    refusing.extensions["celery"] = make_celery(dead_broker)
    refused = post(refusing.test_client(), KEY, files())
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "unavailable"
    retried = post(client, KEY, files())
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert post(client, KEY, files()).get_json()["job_id"] == retried.get_json()["job_id"]
