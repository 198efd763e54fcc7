"""The worker's logic without a broker (as Celery's testing guide advises): the real model and a
real Redis, called directly."""
from __future__ import annotations

import math
import threading
import time
import uuid

import pytest
from redis import Redis

from common.chunks import PENDING
from common.jobs import CANCELLED, DONE, FAILED, JobStore
from common.settings import Settings
from harness import valid_images
from worker.classify import MAX_ATTEMPTS, Batching, classify_batch, classify_chunk, classify_taken, drain
from worker.inference import Classifier

MAX_PIXELS = Settings.max_pixels


@pytest.fixture(scope="module")
def classifier(settings):
    return Classifier(settings.model_path, str(settings.model_card_path), threads=1)


@pytest.fixture
def store(redis_server):
    return JobStore(Redis.from_url(redis_server.url), ttl_s=60)


def new_job(store: JobStore, images: list[bytes]) -> str:
    job_id = str(uuid.uuid4())
    store.create(job_id, [f"{i}.jpg" for i in range(len(images))], dict(enumerate(images)), {})
    return job_id


def test_one_batch_with_a_bad_image(store, classifier):
    photo = valid_images(1)[0][0].read_bytes()
    job_id = new_job(store, [photo, b"GIF89a broken", photo])
    classify_chunk(store, classifier, job_id, [0, 1, 2], MAX_PIXELS)
    job = store.get(job_id)
    assert [image["status"] for image in job.images] == [DONE, FAILED, DONE]
    assert job.images[0]["top3"] == job.images[2]["top3"]  # same photo, same answer in one batch
    assert job.model == classifier.identity


def test_a_chunk_that_keeps_killing_workers_fails(store, classifier):
    photo = valid_images(1)[0][0].read_bytes()
    job_id = new_job(store, [photo, photo])
    for _ in range(MAX_ATTEMPTS):  # started this often, never finished: each time its worker died
        store.mark_running(job_id, [0, 1])
    classify_chunk(store, classifier, job_id, [0, 1], MAX_PIXELS)
    job = store.get(job_id)
    assert job.finished
    assert {image["error"]["code"] for image in job.images} == {"worker_crashed"}


def test_a_bad_image_in_a_batch_across_jobs_fails_alone(store, classifier):
    photo = valid_images(1)[0][0].read_bytes()
    good, mixed, gone = new_job(store, [photo]), new_job(store, [photo, photo[:400]]), str(uuid.uuid4())
    classify_batch(store, classifier, [(good, [0]), (mixed, [0, 1]), (gone, [0])], MAX_PIXELS)
    assert [image["status"] for image in store.get(good).images] == [DONE]
    mixed_images = store.get(mixed).images
    assert [image["status"] for image in mixed_images] == [DONE, FAILED]
    assert mixed_images[1]["error"]["code"] in {"corrupt_image", "not_an_image"}  # a JPEG cut short
    assert mixed_images[0]["top3"] == store.get(good).images[0]["top3"]  # the same photo, the same answer
    assert store.get(gone) is None  # an expired job among them is skipped, not brought back


def test_a_batch_that_killed_its_worker_runs_chunk_by_chunk_so_the_poison_fails_alone(store, classifier):
    """Chunks of three jobs were taken as one batch and its worker died each time (so far as the
    attempt counts tell): delivered again, the batch runs chunk by chunk, and only the chunk that
    reached its limit fails; the other jobs' images are classified."""
    photo = valid_images(1)[0][0].read_bytes()
    jobs = [new_job(store, [photo]) for _ in range(3)]
    for _ in range(MAX_ATTEMPTS):  # the poison's chunk was started this often; the others once
        store.mark_running(jobs[1], [0])
    store.mark_running(jobs[0], [0]), store.mark_running(jobs[2], [0])
    store.redis.set("jobs:batch:task-1", "[]")
    classify_taken(store, classifier, [(job_id, [0]) for job_id in jobs], True, "task-1", MAX_PIXELS)
    results = [store.get(job_id).images[0] for job_id in jobs]
    assert [r["status"] for r in results] == [DONE, FAILED, DONE]
    assert results[1]["error"]["code"] == "worker_crashed"
    assert not store.redis.exists("jobs:batch:task-1")  # written: a later copy of the task finds nothing


def test_a_wake_up_drains_the_ready_chunks_of_every_job_in_batches(store, classifier):
    """Five one-photo jobs listed to batch, two images a batch: one task classifies them all, in
    three inferences, and wakes another worker each time it leaves chunks behind."""
    queue, photo = f"test-{uuid.uuid4()}", valid_images(1)[0][0].read_bytes()
    jobs = [str(uuid.uuid4()) for _ in range(5)]
    for job_id in jobs:
        store.create(job_id, ["a.jpg"], {0: photo}, {}, [[0]], queue=queue)
    wakes = []
    drain(store, classifier, queue, "task-1", Batching(2, MAX_PIXELS, math.inf, 60, 60), lambda: wakes.append(1))
    assert [store.get(job_id).images[0]["status"] for job_id in jobs] == [DONE] * 5
    assert len(wakes) == 2  # after the first and second batches; the third emptied the list
    assert store.redis.llen(f"jobs:ready:{queue}") == 0
    assert [store.redis.zscore(PENDING, f"{job_id} 0") for job_id in jobs] == [None] * 5  # every chunk ended


def test_a_lingering_task_takes_what_is_listed_meanwhile(store, classifier):
    """Once the list is empty the task lingers: a job listed then is classified by the same task,
    with no wake-up sent; with nothing more it stops once its linger ends."""
    queue, photo = f"test-{uuid.uuid4()}", valid_images(1)[0][0].read_bytes()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.create(first, ["a.jpg"], {0: photo}, {}, [[0]], queue=queue)
    due = []
    later = threading.Timer(0.3, lambda: due.append(store.create(second, ["b.jpg"], {0: photo}, {}, [[0]], queue=queue)))
    later.start()
    began = time.monotonic()
    drain(store, classifier, queue, "task-3", Batching(16, MAX_PIXELS, math.inf, 60, 60, linger_s=1.0), lambda: None)
    later.join()
    assert due == [False]  # the task lingered: no wake-up was due
    assert [store.get(job_id).images[0]["status"] for job_id in (first, second)] == [DONE, DONE]
    assert time.monotonic() - began > 1.2  # it lingered once more after the second job, then stopped
    assert store.redis.zcard(f"jobs:ready:{queue}:lingering") == 0


def test_a_drained_batch_skips_cancelled_and_expired_jobs(store, classifier):
    queue, photo = f"test-{uuid.uuid4()}", valid_images(1)[0][0].read_bytes()
    good, cancelled, expired = (str(uuid.uuid4()) for _ in range(3))
    for job_id in (good, cancelled, expired):
        store.create(job_id, ["a.jpg", "b.jpg"], {0: photo, 1: photo}, {}, [[0, 1]], queue=queue)
    store.cancel(cancelled)
    store.redis.delete(store.key(expired))
    drain(store, classifier, queue, "task-2", Batching(16, MAX_PIXELS, math.inf, 60, 60), lambda: None)
    assert [image["status"] for image in store.get(good).images] == [DONE, DONE]
    assert store.get(cancelled).images == [{"status": CANCELLED}] * 2 and store.get(cancelled).model is None
    assert not store.redis.exists(store.key(expired))  # not brought back half-made
    assert not store.redis.exists("jobs:batch:task-2")


def test_expired_job_is_skipped(store, classifier):
    job_id = str(uuid.uuid4())  # a job whose record expired before its task ran
    classify_chunk(store, classifier, job_id, [0], MAX_PIXELS)
    assert not store.redis.exists(store.key(job_id)), "a task must not bring an expired job back half-made"
    assert store.get(job_id) is None


def test_a_cancelled_chunk_ends_with_no_result(store, classifier):
    job_id = str(uuid.uuid4())
    store.create(job_id, ["a.jpg"], {0: b"not even an image"}, {}, chunks=[[0]])
    store.cancel(job_id)
    classify_chunk(store, classifier, job_id, [0], MAX_PIXELS)
    job = store.get(job_id)
    assert job.images == [{"status": CANCELLED}] and job.model is None  # no result was written
    assert store.redis.zscore(PENDING, f"{job_id} 0") is None  # and the chunk no longer waits


def test_sports_photos_come_out_confident_and_non_sport_pictures_mostly_not(store, classifier):
    """The card's calibration at work: the flag is the calibrated top-1 against the card's threshold."""
    from ml.nonsport import non_sport_photos  # no torch: pictures from scikit-image and drawn here

    photos = [path.read_bytes() for path, _ in valid_images(20, start=40)]
    others = list(non_sport_photos().values())
    job_id = new_job(store, photos + others)
    classify_chunk(store, classifier, job_id, list(range(len(photos) + len(others))), MAX_PIXELS)
    results = store.get(job_id).images
    assert all(r["status"] == DONE for r in results)
    assert all(r["confident"] == (r["top3"][0]["confidence"] >= classifier.threshold) for r in results)
    sports, non_sport = results[:len(photos)], results[len(photos):]
    assert sum(r["confident"] for r in sports) >= len(sports) // 2
    assert sum(not r["confident"] for r in non_sport) >= 0.8 * len(non_sport)
