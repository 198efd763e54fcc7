"""Redis with a small maxmemory (noeviction, as `make run` sets it) filled by submissions that no
worker consumes: the web app refuses with 503 overloaded before Redis runs out, nothing answers
500 or exits, and once a worker runs, every accepted image ends done or failed."""
from __future__ import annotations

import dataclasses
import io

import pytest
import requests
from redis import Redis

from harness import RedisServer, WebServer, Worker, valid_images, wait_for
from webapp import create_app

MAXMEMORY = "30mb"
IMAGES_PER_JOB = 64
MAX_SUBMISSIONS = 80  # far more than fit: the loop ends on refusals long before


@pytest.fixture(scope="module")
def small_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("small-redis"),
                         options=("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small_settings(settings, small_redis):
    return dataclasses.replace(settings, redis_url=small_redis.url, rate_limit="")


def photos(count: int, start: int = 0) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (path.name, path.read_bytes())) for path, _ in valid_images(count, start)]


def test_the_limit_is_a_share_of_maxmemory(small_settings):
    """With a maxmemory, its share decides and MAX_REDIS_MB does not."""
    other_db = dataclasses.replace(small_settings, redis_url=small_settings.redis_url.rsplit("/", 1)[0] + "/1")
    Redis.from_url(other_db.redis_url).flushdb()

    def post(**overrides):
        files = [(io.BytesIO(data), name) for _, (name, data) in photos(1)]
        client = create_app(dataclasses.replace(other_db, **overrides)).test_client()
        return client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")

    refused = post(redis_memory_share=0.0)
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "overloaded"
    assert refused.headers["Retry-After"]
    assert post(max_redis_mb=0).status_code == 202


def test_filling_redis_gets_503s_before_it_runs_out(small_settings, small_redis, tmp_path):
    web = WebServer(small_settings, tmp_path / "web.log", {"WEB_PROCESSES": "1"}).start()
    worker = None
    try:
        redis = Redis.from_url(small_redis.url)
        accepted, answers = [], []
        for n in range(MAX_SUBMISSIONS):
            response = requests.post(f"{web.url}/api/v1/jobs", files=photos(IMAGES_PER_JOB, n * IMAGES_PER_JOB),
                                     timeout=60)
            answers.append(response.status_code)
            assert response.status_code in (202, 503), response.text
            if response.status_code == 202:
                accepted.append(response.json()["status_url"])
            else:
                assert response.json()["error"]["code"] == "overloaded" and response.headers["Retry-After"]
            if answers[-5:] == [503] * 5:
                break
        memory = redis.info("memory")
        print(f"\n{len(accepted)} jobs accepted, then {answers.count(503)} refused; used_memory "
              f"{memory['used_memory'] / 2**20:.1f} MB of maxmemory {memory['maxmemory'] / 2**20:.0f} MB")
        assert accepted and answers[-5:] == [503] * 5
        assert memory["used_memory"] < memory["maxmemory"]

        worker = Worker(small_settings, tmp_path / "worker.log").start()
        for status_url in accepted:
            job = wait_for(lambda: (j := requests.get(f"{web.url}{status_url}?wait=10", timeout=30).json())
                           ["status"] == "done" and j, 600, f"job {status_url}")
            assert {image["status"] for image in job["results"]} <= {"done", "failed"}
            assert job["progress"]["done"] + job["progress"]["failed"] == job["progress"]["total"] == IMAGES_PER_JOB
        assert web.check_alive() and worker.check_alive()
        # The images' memory is freed as they finish: submissions are accepted again.
        again = wait_for(lambda: requests.post(f"{web.url}/api/v1/jobs", files=photos(1), timeout=60).status_code == 202,
                         60, "a submission accepted again")
        assert again
    finally:
        if worker:
            worker.stop()
        web.stop()
