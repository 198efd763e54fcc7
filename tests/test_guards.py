"""API key, rate limit, back-pressure, the long-poll cap, CORS and request-level mistakes, each on
its own app over the real Redis."""
from __future__ import annotations

import io
import dataclasses
import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect
from redis import Redis

from common import workers
from harness import serve, valid_images, wait_for
from webapp import create_app


@pytest.fixture
def make_client(fresh_settings):
    """A fresh Redis database per app: no queue or counters shared."""
    return lambda **overrides: create_app(fresh_settings(**overrides)).test_client()


def post_photo(client, headers=None):
    path, _ = valid_images(1)[0]
    data = {"file": [(io.BytesIO(path.read_bytes()), path.name)]}
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data", headers=headers or {})


def test_api_key_when_configured(make_client):
    client = make_client(api_key="s3cret")
    refused = post_photo(client)
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
    assert post_photo(client, {"X-API-Key": "wrong"}).status_code == 401
    assert post_photo(client, {"X-API-Key": "s3cret"}).status_code == 202


def test_api_key_off_by_default(make_client):
    assert post_photo(make_client()).status_code == 202


def test_rate_limit_per_client(make_client):
    client = make_client(rate_limit="3/minute")
    assert [post_photo(client).status_code for _ in range(3)] == [202] * 3
    limited = post_photo(client)
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0


def test_back_pressure_when_queue_is_deep(make_client):
    client = make_client(max_queue_depth=2, chunk_size=1)  # no worker consumes this database's queue
    assert post_photo(client).status_code == 202
    assert post_photo(client).status_code == 202
    full = post_photo(client)
    assert full.status_code == 503
    assert full.get_json()["error"]["code"] == "overloaded" and full.headers["Retry-After"]


def test_back_pressure_when_redis_memory_is_high(make_client):
    full = post_photo(make_client(max_redis_mb=0))
    assert full.status_code == 503 and full.get_json()["error"]["code"] == "overloaded"


def test_cors_is_same_origin_unless_configured(make_client):
    origin = {"Origin": "https://photos.example"}
    assert "Access-Control-Allow-Origin" not in make_client().get("/api/v1/classes", headers=origin).headers
    allowed = make_client(cors_origins="https://photos.example").get("/api/v1/classes", headers=origin)
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://photos.example"


def held_job(client) -> str:
    """A job with nothing to run, in the client's own Redis database: it stays queued, so a long
    poll on it waits its full time."""
    job_id = str(uuid.uuid4())
    client.application.extensions["jobs"].create(job_id, ["held.jpg"], {}, {}, [])
    return job_id


def test_long_polls_per_client_are_capped(make_client):
    client = make_client(max_long_polls_per_client=2)
    url = f"/api/v1/jobs/{held_job(client)}"
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(client.get, f"{url}?wait=10") for _ in range(2)]
        redis = client.application.extensions["redis"]
        waiting = lambda: sum(redis.zcard(k) for k in redis.scan_iter("long_polls:*")) == 2  # noqa: E731
        wait_for(waiting, 10, "two long polls waiting")
        refused = client.get(f"{url}?wait=4")
        assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_long_polls"
        assert int(refused.headers["Retry-After"]) > 0
        assert client.get(url).status_code == 200  # a plain poll is never refused
        path, _ = valid_images(1)[0]
        predict = client.post("/predict", data={"file": (io.BytesIO(path.read_bytes()), path.name)})
        assert predict.status_code == 429, "/predict waits as a long poll does"
        # A submission's wait is free for its first second, then needs a slot: with none, it is
        # answered 202 at once (its job, which no worker runs here, would have held it 30 s).
        submitted = client.post("/api/v1/jobs?wait=30", data={"file": (io.BytesIO(path.read_bytes()), path.name)})
        assert submitted.status_code == 202 and not any(f.done() for f in held)
        assert [f.result().status_code for f in held] == [200, 200]
    assert client.get(f"{url}?wait=0.1").status_code == 200  # slots are given back


def test_too_many_form_parts_names_the_parts_limit(make_client):
    client = make_client()
    data = {f"part{i}": "x" for i in range(1001)}
    response = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "too_many_parts" and "1,000 parts" in error["message"]


def test_job_ids_are_case_insensitive(make_client):
    client = make_client()
    job_id = held_job(client)
    response = client.get(f"/api/v1/jobs/{job_id.upper()}")
    assert response.status_code == 200 and response.get_json()["job_id"] == job_id


def test_ready_does_not_show_worker_paths(make_client):
    client = make_client()
    redis = client.application.extensions["redis"]
    try:
        onnxruntime_text = "[ONNXRuntimeError] : 3 : NO_SUCHFILE : Load model from /srv/secret/models/m.onnx failed"
        workers.report_problem(redis, "w1@host", f"model failed to load: {onnxruntime_text}")
        ready = client.get("/ready")
        assert ready.status_code == 503
        problems = " ".join(ready.get_json()["problems"])
        assert "model failed to load" in problems and "/srv" not in problems
    finally:
        redis.delete(workers.PROBLEM_PREFIX + "w1@host")


@pytest.fixture
def keyed_server(settings, worker):
    """The page and API with API_KEY set, on the session's Redis and worker."""
    yield from serve(create_app(dataclasses.replace(settings, api_key="s3cret")))


def test_page_asks_for_the_api_key_and_submits_with_it(browser, keyed_server):
    page = browser.new_page()
    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept("s3cret")))
    page.goto(keyed_server)
    assert "s3cret" not in page.content()
    page.set_input_files("#file-input", [str(path) for path, _ in valid_images(2, start=5)])
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(2, timeout=30_000)
    page.set_input_files("#file-input", [str(path) for path, _ in valid_images(1, start=7)])
    expect(page.locator('.result-card[data-status="done"]')).to_have_count(3, timeout=30_000)
    assert len(asked) == 1 and "X-API-Key" in asked[0]  # asked once, then remembered
