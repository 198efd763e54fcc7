"""Heavy legal images: the decode budget, heavy images in tasks of their own, and the memory ceiling
of a pool process. Real Redis, real workers, real images made with Pillow."""
from __future__ import annotations

import dataclasses
import io

import psutil
import pytest
from PIL import Image
from redis import Redis

from common.chunks import PENDING, chunked
from common.preprocess import Preprocessing, decode_cost, decoded_size, open_image
from harness import RedisServer, Worker, valid_images
from webapp import create_app

MAX_PIXELS = 64_000_000


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def heavy_webp() -> bytes:
    """The issue's image: a few KB of lossless RGBA WebP that decodes to 7999x7999x4 bytes."""
    return encode(Image.new("RGBA", (7999, 7999), (40, 90, 160, 255)), "WEBP", lossless=True)


def photos(count: int) -> list[tuple[bytes, str]]:
    return [(path.read_bytes(), path.name) for path, _ in valid_images(count)]


def post(client, files: list[tuple[bytes, str]]) -> dict:
    data = {"file": [(io.BytesIO(content), name) for content, name in files]}
    response = client.post("/api/v1/jobs", data=data, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def finished(client, status_url: str) -> dict:
    for _ in range(40):  # bounded: 40 long polls of up to 30 s
        job = client.get(f"{status_url}?wait=30").get_json()
        if job["status"] not in ("queued", "running"):
            return job
    raise AssertionError(f"job still {job['status']}: {job}")


@pytest.mark.parametrize("size", [(300, 200), (4000, 3000), (8000, 8000), (1000, 700), (449, 900), (3584, 3584)])
def test_the_estimate_is_the_size_jpeg_really_decodes_at(size):
    image = open_image(encode(Image.new("RGB", size, (9, 9, 9)), "JPEG"), MAX_PIXELS)
    estimate = decoded_size(image, 224)
    image.draft("RGB", (448, 448))
    image.load()
    assert estimate == image.size


def test_formats_without_reduced_decoding_cost_their_full_size():
    webp = open_image(heavy_webp(), MAX_PIXELS)
    assert decode_cost(webp, 224) == 7999 * 7999 * 4
    jpeg = open_image(encode(Image.new("RGB", (8000, 8000)), "JPEG"), MAX_PIXELS)
    assert decode_cost(jpeg, 224) == 1000 * 1000 * 4  # decoded at 1/8
    grey = open_image(encode(Image.new("L", (3000, 2000)), "PNG"), MAX_PIXELS)
    assert decode_cost(grey, 224) == 3000 * 2000


def test_heavy_images_get_chunks_of_their_own():
    assert chunked(list(range(7)), 3, heavy={1, 5}) == [[0, 2, 3], [4, 6], [1], [5]]
    assert chunked(list(range(4)), 16) == [[0, 1, 2, 3]]


def test_an_image_over_the_budget_fails_at_upload_the_rest_is_accepted(web_client):
    job = post(web_client, [*photos(2), (heavy_webp(), "huge.webp")])
    failed = web_client.get(job["status_url"]).get_json()["results"][2]
    assert failed["status"] == "failed" and failed["error"]["code"] == "image_too_heavy"


def test_heavy_images_are_queued_one_per_task(fresh_settings):
    """No worker serves this database: the pending chunks and queued tasks stay to be read."""
    settings = fresh_settings(heavy_decode_mb=1)
    client = create_app(settings).test_client()
    big = encode(Image.new("RGB", (1000, 1000), (200, 10, 10)), "PNG")  # 4 MB decoded: heavy here
    job = post(client, [*photos(2), (big, "a.png"), photos(3)[2], (big, "b.png")])
    redis = Redis.from_url(settings.redis_url)
    members = {m.decode() for m in redis.zrange(PENDING, 0, -1)}
    assert members == {f"{job['job_id']} 0,1,3", f"{job['job_id']} 2", f"{job['job_id']} 4"}
    assert redis.llen("celery") == 1 and redis.llen("celery.heavy") == 2  # heavy ones on their own queue


@pytest.fixture(scope="module")
def tight_worker(settings, tmp_path_factory):
    """A worker whose decode budget and memory ceiling are small enough to reach with a few images;
    its app lets everything through, so the worker's own checks are what a job meets."""
    folder = tmp_path_factory.mktemp("heavy")
    redis = RedisServer(folder / "redis").start()
    mine = dataclasses.replace(settings, redis_url=redis.url, max_decode_mb=64, worker_memory_mb=160)
    worker = Worker(mine, folder / "worker.log").start()
    yield worker, create_app(dataclasses.replace(mine, max_decode_mb=1024)).test_client()
    worker.stop()
    redis.stop()


def pool(worker: Worker) -> set[int]:
    return {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}


def test_the_worker_fails_an_image_over_its_budget_alone(tight_worker):
    worker, client = tight_worker
    big = encode(Image.new("RGB", (5000, 5000), (10, 120, 10)), "PNG")  # 95 MB decoded
    job = finished(client, post(client, [*photos(2), (big, "big.png")])["status_url"])
    assert [r["status"] for r in job["results"]] == ["done", "done", "failed"]
    assert job["results"][2]["error"]["code"] == "image_too_heavy"


def test_the_memory_ceiling_fails_the_image_and_the_worker_goes_on(tight_worker):
    """Greyscale costs one byte a pixel to decode (under the budget), four once turned to RGB:
    past the ceiling, so the decode raises MemoryError in the pool process."""
    worker, client = tight_worker
    before = pool(worker)
    grey = encode(Image.new("L", (7000, 7000), 7), "PNG")
    job = finished(client, post(client, [*photos(2), (grey, "grey.png")])["status_url"])
    assert [r["status"] for r in job["results"]] == ["done", "done", "failed"]
    assert job["results"][2]["error"]["code"] == "image_too_heavy"
    assert worker.check_alive() and pool(worker) == before  # the same pool process, not a replaced one
    after = finished(client, post(client, photos(3))["status_url"])
    assert [r["status"] for r in after["results"]] == ["done"] * 3
