"""API key, rate limit, back-pressure and CORS, each on its own app over the real Redis."""
from __future__ import annotations

import io

import pytest

from harness import valid_images
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
