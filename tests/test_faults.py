"""Faults: workers killed or stopped mid-job, Redis and the web process restarted, a worker whose
model will not load. Each test owns its Redis and workers; an accepted job must always finish."""
from __future__ import annotations

import dataclasses
import io
import signal
import uuid

import pytest
from redis import Redis

from common import workers
from common import chunks
from common.chunks import PENDING
from common.jobs import FAILED, JobStore
from common.queue import make_celery
from harness import RedisServer, Worker, free_port, valid_images, wait_for
from webapp import create_app


@pytest.fixture
def stack(settings, tmp_path):
    """A private Redis with persistence on, plus helpers to run workers and web apps against it."""
    redis = RedisServer(tmp_path / "redis", appendonly=True).start()
    # Short, so a task held by a SIGKILLed worker, or a chunk a dead web process did not queue, is
    # handed out within seconds, not minutes.
    mine = dataclasses.replace(settings, redis_url=redis.url, visibility_timeout_s=4, dispatch_grace_s=1)
    started = []

    class Stack:
        server, settings, workers = redis, mine, started

        @staticmethod
        def worker(wait_ready=True, **env) -> Worker:
            w = Worker(mine, tmp_path / f"worker{len(started)}.log", env).start(wait_ready)
            started.append(w)
            return w

        @staticmethod
        def client():  # a new app each time: as if the web process restarted
            return create_app(mine).test_client()

    yield Stack
    for w in started:
        w.stop()
    redis.stop()


def submit(client, count: int) -> str:
    files = [(io.BytesIO(path.read_bytes()), path.name) for path, _ in valid_images(count)]
    response = client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 202
    return response.get_json()["status_url"]


def job(client, status_url: str, wait: int = 0) -> dict:
    return client.get(f"{status_url}?wait={wait}").get_json()


def assert_completes(client, status_url: str, total: int, timeout: float = 90) -> None:
    finished = wait_for(lambda: (j := job(client, status_url, wait=5))["status"] == "done" and j, timeout, "the job")
    assert finished["progress"] == {"done": total, "failed": 0, "total": total}


def test_photo_after_photo_costs_one_wake_up_and_a_lingering_worker_killed_loses_nothing(stack):
    """One-photo jobs sent one after another reach the worker process lingering on the list, with
    no Celery message after the first; killed while it lingers, the worker leaves a job sent then
    to its task's redelivery, which a new worker takes."""
    client, lingering = stack.client(), stack.worker(BATCH_LINGER_S="60")
    for _ in range(5):
        assert_completes(client, submit(client, 1), 1)
    wake_ups = [line for line in lingering.log.read_text().splitlines() if "classify_waiting[" in line and "received" in line]
    assert len(wake_ups) == 1, "one wake-up, then the bell"
    lingering.kill(signal.SIGKILL)
    status_url = submit(client, 1)  # no wake-up: the dead process still counts as lingering
    stack.worker()
    assert_completes(client, status_url, 1)


def test_worker_killed_mid_job(stack):
    client, doomed = stack.client(), stack.worker(WORKER_THREADS="1")
    status_url = submit(client, 64)
    wait_for(lambda: job(client, status_url)["status"] == "running", 30, "the job to start", interval=0.01)
    doomed.kill(signal.SIGKILL)  # parent and pool process at once: nothing gets acknowledged
    assert job(client, status_url)["status"] != "done"
    stack.worker()
    assert_completes(client, status_url, 64)


def test_worker_killed_mid_batch_of_many_jobs(stack):
    """24 one-image jobs queued before any worker runs, so the worker takes them in batches across
    jobs; killed mid-way, a new worker finishes every one (the tasks that took batches are
    delivered again and take the same chunks)."""
    client = stack.client()
    status_urls = [submit(client, 1) for _ in range(24)]
    doomed = stack.worker(WORKER_THREADS="1")
    wait_for(lambda: any(job(client, url)["status"] != "queued" for url in status_urls), 30, "a batch to start",
             interval=0.01)
    doomed.kill(signal.SIGKILL)
    stack.worker()
    for url in status_urls:
        assert_completes(client, url, 1)
    assert Redis.from_url(stack.settings.redis_url).keys("jobs:batch:*") == []


def test_a_bad_image_batched_with_other_jobs_fails_alone(stack):
    client = stack.client()
    good = [submit(client, 1) for _ in range(3)]
    cut_short = valid_images(1)[0][0].read_bytes()[:400]  # a JPEG header, then nothing: fails decoding
    response = client.post("/api/v1/jobs", data={"file": [(io.BytesIO(cut_short), "cut.jpg")]},
                           content_type="multipart/form-data")
    good += [submit(client, 1) for _ in range(3)]
    stack.worker()
    bad = wait_for(lambda: (j := job(client, response.get_json()["status_url"], wait=5))["status"] == "done" and j,
                   60, "the bad image's job")
    assert bad["results"][0]["status"] == FAILED
    for url in good:
        assert_completes(client, url, 1)


def test_chunks_listed_with_no_wake_up_are_classified_all_the_same(stack):
    """What a web process leaves if it dies after storing a job (its chunks listed to batch) but
    before sending the wake-up, or what a lost wake-up leaves: the workers' sweeper finds a list
    nobody takes from and wakes a worker."""
    store = JobStore(Redis.from_url(stack.settings.redis_url), ttl_s=600, dispatch_grace_s=1)
    images = {i: path.read_bytes() for i, (path, _) in enumerate(valid_images(3))}
    job_id = str(uuid.uuid4())
    assert store.create(job_id, [f"{i}.jpg" for i in images], images, {}, [[0, 1], [2]], queue="celery")  # a wake-up due
    stack.worker()
    assert_completes(stack.client(), f"/api/v1/jobs/{job_id}", 3)


def test_worker_stopped_with_sigterm_mid_job(stack):
    client, stopping = stack.client(), stack.worker(WORKER_THREADS="1")
    status_url = submit(client, 64)
    wait_for(lambda: job(client, status_url)["status"] == "running", 30, "the job to start", interval=0.01)
    stopping.kill(signal.SIGTERM)  # warm shutdown: finishes the task in hand, returns the rest
    stack.worker()
    assert_completes(client, status_url, 64)


def test_redis_and_web_restart_lose_nothing(stack):
    status_url = submit(stack.client(), 3)  # accepted while no worker runs
    stack.server.stop()
    stack.server.start()  # same port and data directory: the append-only file is replayed
    stack.worker()
    assert_completes(stack.client(), status_url, 3)


def test_web_dying_before_it_queues_a_job_loses_nothing(stack):
    """What a web process leaves if it dies between recording a job and queueing its chunks: the
    job and its chunks recorded, no task sent. A worker queues them once the grace has passed."""
    store = JobStore(Redis.from_url(stack.settings.redis_url), ttl_s=600, dispatch_grace_s=1)
    images = {i: path.read_bytes() for i, (path, _) in enumerate(valid_images(20))}
    orphan = str(uuid.uuid4())
    store.create(orphan, [f"{i}.jpg" for i in images], images, {}, chunks=[list(range(16)), [16, 17, 18, 19]])
    client = stack.client()
    submitted = submit(client, 2)  # a web process that lives records and queues as usual
    # Only the orphan's chunks are due for a worker to queue; the queued job's chunk is due again
    # only if its task is lost (REQUEUE_AFTER_S).
    now, _ = store.redis.time()
    due_in = {member.decode(): score - now for member, score in store.redis.zrange(PENDING, 0, -1, withscores=True)}
    orphan_chunks = {chunks.member(orphan, list(range(16))), chunks.member(orphan, [16, 17, 18, 19])}
    assert {member for member, seconds in due_in.items() if seconds < 60} == orphan_chunks
    assert due_in.keys() - orphan_chunks == {chunks.member(submitted.rsplit("/", 1)[1], [0, 1])}
    stack.worker()
    assert_completes(client, f"/api/v1/jobs/{orphan}", 20)
    assert_completes(client, submitted, 2)
    assert store.redis.zcard(PENDING) == 0


def test_a_queued_chunk_whose_task_was_lost_is_queued_again(stack):
    """A chunk that was queued but never finished (its message dropped, or acknowledged after an
    error) comes due again after REQUEUE_AFTER_S; 0 here, so it is due at once."""
    store = JobStore(Redis.from_url(stack.settings.redis_url), ttl_s=600, requeue_after_s=0)
    images = {i: path.read_bytes() for i, (path, _) in enumerate(valid_images(3))}
    lost = str(uuid.uuid4())
    store.create(lost, [f"{i}.jpg" for i in images], images, {}, chunks=[[0, 1, 2]])
    store.chunks.dispatched(lost, [[0, 1, 2]])  # as if queued; no task exists
    stack.worker()
    assert_completes(stack.client(), f"/api/v1/jobs/{lost}", 3)
    assert store.redis.zcard(PENDING) == 0


def test_worker_without_its_model_says_so_and_jobs_wait(stack, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    card = tmp_path / "broken.json"
    card.write_text(stack.settings.model_card_path.read_text())
    stack.worker(wait_ready=False, MODEL_PATH=str(broken))
    client = stack.client()
    redis = Redis.from_url(stack.settings.redis_url)
    wait_for(lambda: workers.worker_problems(redis), 60, "the worker to report its problem")
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "model failed to load" in " ".join(ready.get_json()["problems"])
    status_url = submit(client, 2)
    assert job(client, status_url, wait=3)["status"] == "queued"  # waiting, not failed
    stack.worker()
    assert client.get("/ready").status_code == 200
    assert_completes(client, status_url, 2)


def test_a_broker_that_refuses_the_task_fails_the_images_visibly(stack):
    """The job store answers but the queue does not (a broker on another address, down): the client
    gets a 503 with Retry-After, and the job's images end as failed, not pending."""
    app = create_app(stack.settings)
    dead_broker = dataclasses.replace(stack.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app.extensions["celery"] = make_celery(dead_broker)
    client = app.test_client()
    files = [(io.BytesIO(path.read_bytes()), path.name) for path, _ in valid_images(2)]
    response = client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "unavailable"
    store = app.extensions["jobs"]
    [job_key] = [key.decode() for key in store.redis.scan_iter("job:*") if key.count(b":") == 1]
    failed = store.get(job_key.removeprefix("job:"))
    assert failed.finished and {image["status"] for image in failed.images} == {FAILED}
    assert {image["error"]["code"] for image in failed.images} == {"not_queued"}
    assert store.redis.zcard(PENDING) == 0


def test_a_store_out_of_memory_keeps_no_job(stack):
    """Redis refuses writes (over its maxmemory, past a back-pressure check that let the request
    through): the client gets a 503, and nothing of the job is left behind."""
    client = create_app(dataclasses.replace(stack.settings, redis_memory_share=1e9, rate_limit="")).test_client()
    redis = Redis.from_url(stack.settings.redis_url)
    redis.config_set("maxmemory", "1")
    try:
        files = [(io.BytesIO(path.read_bytes()), path.name) for path, _ in valid_images(2)]
        response = client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")
        assert response.status_code == 503 and response.headers["Retry-After"]
        assert response.get_json()["error"]["code"] == "unavailable"
        assert list(redis.scan_iter("job:*")) == [] and redis.zcard(PENDING) == 0
    finally:
        redis.config_set("maxmemory", "0")
    assert client.post("/api/v1/jobs", data={"file": [(io.BytesIO(valid_images(1)[0][0].read_bytes()), "a.jpg")]},
                       content_type="multipart/form-data").status_code == 202


def test_a_store_that_cannot_record_the_refusal_keeps_no_job(stack):
    """The job is stored, the broker refuses its task, and Redis then refuses the write that would
    fail its images (here by an ACL: no LPUSH, no scripts): the job is removed, the client gets a
    503, and no chunk is left for a worker to queue."""
    admin = Redis.from_url(stack.settings.redis_url)
    admin.acl_setuser("web", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-lpush", "-eval", "-evalsha"])
    url = f"redis://web:pw@127.0.0.1:{stack.server.port}/0"
    client = create_app(dataclasses.replace(stack.settings, redis_url=url, rate_limit="")).test_client()
    files = [(io.BytesIO(path.read_bytes()), path.name) for path, _ in valid_images(3)]
    response = client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "unavailable"
    assert list(admin.scan_iter("job:*")) == [] and admin.zcard(PENDING) == 0
