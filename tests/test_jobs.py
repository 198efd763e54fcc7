"""The Redis job store on its own (real Redis): idempotence, expiry, long-poll wake-up,
cancellation, and the pending-chunk scheduler."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from redis import Redis

from common.chunks import PENDING, ChunkScheduler
from common.jobs import (CANCELLED, DONE, FAILED, PUBLISHED_BYTES, QUEUED, RUNNING, JobStore, failure, now_iso,
                         success)
from harness import wait_for

PREDICTION = {"top3": [{"label": "a", "display_name": "A", "confidence": 0.5}] * 3, "confident": False}
MODEL = {"name": "m", "version": "1"}


@pytest.fixture
def store(redis_server):
    return JobStore(Redis.from_url(redis_server.url), ttl_s=60)


def new_job(store: JobStore, total: int = 2) -> str:
    job_id = str(uuid.uuid4())
    store.create(job_id, [f"{i}.jpg" for i in range(total)], {i: b"bytes" for i in range(total)}, {})
    return job_id


def statuses(store: JobStore, job_id: str) -> list[str]:
    return [image["status"] for image in store.get(job_id).images]


def test_a_task_run_twice_changes_nothing(store):
    job_id = new_job(store)
    store.finish(job_id, {0: success(PREDICTION), 1: failure("corrupt_image", "bad")}, MODEL)
    first = store.get(job_id)
    assert store.mark_running(job_id, [0, 1]).indices == []  # the redelivered task starts again...
    store.finish(job_id, {0: failure("decode_error", "x"), 1: success(PREDICTION)}, MODEL)  # ...and ends otherwise
    assert store.get(job_id) == first
    assert first.finished and [image["status"] for image in first.images] == [DONE, FAILED]


def test_images_are_deleted_once_final(store):
    job_id = new_job(store)
    store.finish(job_id, {0: success(PREDICTION)}, MODEL)
    assert store.images(job_id, [0, 1]) == [None, b"bytes"]
    assert statuses(store, job_id) == [DONE, QUEUED] and not store.get(job_id).finished


def test_jobs_expire(redis_server):
    short = JobStore(Redis.from_url(redis_server.url), ttl_s=1)
    job_id = new_job(short)
    short.finish(job_id, {0: success(PREDICTION), 1: success(PREDICTION)}, MODEL)
    assert short.get(job_id).finished
    time.sleep(2.2)
    assert short.get(job_id) is None
    assert short.mark_running(job_id, [0]) is None  # a late task for an expired job does nothing
    assert short.cancel(job_id) is None


def test_wait_wakes_when_the_job_finishes(store):
    job_id = new_job(store, total=1)
    timer = threading.Timer(0.3, store.finish, args=(job_id, {0: success(PREDICTION)}, MODEL))
    timer.start()
    began = time.monotonic()
    job = store.wait(job_id, timeout_s=20)
    assert job.finished
    assert time.monotonic() - began < 15  # woken by the message, not by the timeout


def test_long_polls_sharing_one_subscription_each_wake_with_their_own_job(redis_server, settings):
    """The web process's long polls share one subscription (common/notify.py): finishing a job
    wakes every poll on it, and only those."""
    shared = JobStore.for_settings(Redis.from_url(redis_server.url), settings, shared_subscription=True)
    job_id, other = new_job(shared, total=1), new_job(shared, total=1)
    answers = {}
    polls = [threading.Thread(target=lambda key, j: answers.__setitem__(key, shared.wait(j, timeout_s=20)), args=args)
             for args in (("a1", job_id), ("a2", job_id), ("b", other))]
    for poll in polls:
        poll.start()
    time.sleep(0.3)
    began = time.monotonic()
    shared.finish(job_id, {0: success(PREDICTION)}, MODEL)
    polls[0].join(20), polls[1].join(20)
    assert answers["a1"].finished and answers["a2"].finished
    assert time.monotonic() - began < 4  # woken by the message, not by the 5 s re-read
    assert "b" not in answers  # still waiting: its job did not finish
    shared.finish(other, {0: success(PREDICTION)}, MODEL)
    polls[2].join(20)
    assert answers["b"].finished


def test_wait_returns_the_job_as_it_stands_on_timeout(store):
    job_id = new_job(store, total=1)
    assert store.wait(job_id, timeout_s=0.2).images == [{"status": QUEUED}]
    assert store.wait(str(uuid.uuid4()), timeout_s=0.2) is None


@pytest.mark.parametrize("shared", [False, True], ids=["own subscription", "shared subscription"])
def test_a_job_watched_before_it_exists_is_waited_on_without_a_first_read(redis_server, settings, shared):
    """POST ?wait and /predict watch a new job before creating it, then wait without reading it
    first: a job that finishes in between ends the wait at once all the same, answered with the
    record its "done" message carries (equal to a read)."""
    store = JobStore.for_settings(Redis.from_url(redis_server.url), settings, shared_subscription=shared)
    if shared:
        listening(store)
    job_id = str(uuid.uuid4())
    with store.watching(job_id) as watch:
        new = JobStore(Redis.from_url(redis_server.url), ttl_s=60)  # the store's own reads are counted below
        new.create(job_id, ["0.jpg", "1.jpg"], {0: b"bytes"}, {1: failure("empty_file", "no bytes")})
        new.finish(job_id, {0: success(PREDICTION)}, MODEL)
        reads, began = count_reads(store), time.monotonic()
        job = store.wait(job_id, timeout_s=4, watch=watch)
    assert time.monotonic() - began < 3  # woken by the message, not by the 4 s timeout (nor the 5 s re-read)
    assert job.finished and job == new.get(job_id)
    if shared:
        assert reads == []
    else:  # its own subscription's first message is the confirmation, after which it reads
        assert reads in ([], [job_id])


def test_a_large_job_is_announced_without_its_record_and_read(redis_server, settings):
    """Every web process hears every job's message: a record over PUBLISHED_BYTES stays home."""
    store = JobStore.for_settings(Redis.from_url(redis_server.url), settings, shared_subscription=True)
    listening(store)
    job_id, total = str(uuid.uuid4()), 64
    with store.watching(job_id) as watch:
        store.create(job_id, [f"photo-{i}.jpg" for i in range(total)], {i: b"bytes" for i in range(total)}, {})
        store.finish(job_id, {i: success(PREDICTION) for i in range(total)}, MODEL)
        reads = count_reads(store)
        job = store.wait(job_id, timeout_s=4, watch=watch)
    assert job.finished and reads == [job_id]
    assert sum(len(k) + len(v) for k, v in store.redis.hgetall(store.key(job_id)).items()) > PUBLISHED_BYTES


def test_a_done_message_without_the_record_makes_the_poll_read_the_job(redis_server, settings):
    """Workers of an earlier version publish just "done" (a rolling upgrade): the poll reads the job."""
    store = JobStore.for_settings(Redis.from_url(redis_server.url), settings, shared_subscription=True)
    listening(store)
    job_id = new_job(store, total=1)
    with store.watching(job_id) as watch:
        store.redis.hset(store.key(job_id), "finished_at", now_iso())  # closed as such a worker closes it
        store.redis.publish(store.channel(job_id), "done")
        reads, began = count_reads(store), time.monotonic()
        job = store.wait(job_id, timeout_s=4, watch=watch)
    assert job.finished and reads == [job_id] and time.monotonic() - began < 3


def listening(store: JobStore) -> None:
    """Returns once the store's shared subscription hears messages (so that none of the test's is
    missed, and no wake of its start reaches the test's watch)."""
    channel = store.channel("listening")
    with store.watching("listening") as watch:
        wait_for(lambda: store.redis.publish(channel, "done") >= 0 and watch(0.2) is not None, 10, "the subscription")


def count_reads(store: JobStore) -> list[str]:
    """The ids of the jobs `store` reads from now on."""
    reads, get = [], store.get
    store.get = lambda job_id: reads.append(job_id) or get(job_id)
    return reads


def test_pending_chunks_are_claimed_once_due_and_again_if_the_claimer_dies(redis_server):
    # Database 1: the session's worker sweeps database 0 and would take these chunks itself.
    store = JobStore(Redis.from_url(redis_server.url.replace("/0", "/1")), ttl_s=60, dispatch_grace_s=0.5,
                     requeue_after_s=0.5)
    job_id = str(uuid.uuid4())
    store.create(job_id, ["a.jpg", "b.jpg", "c.jpg"], {i: b"bytes" for i in range(3)}, {}, chunks=[[0, 1], [2]])
    assert store.chunks.claim_due() == []  # the web process may still be queueing them
    time.sleep(0.6)
    assert sorted(store.chunks.claim_due()) == [(job_id, [0, 1]), (job_id, [2])]
    assert store.chunks.claim_due() == []  # claimed: no second worker queues them meanwhile
    store.chunks.dispatched(job_id, [[2]])
    store.finish(job_id, {2: success(PREDICTION)}, MODEL)
    time.sleep(0.6)  # the first claimer died before queueing [0, 1]: it comes round again; [2] is finished
    assert store.chunks.claim_due() == [(job_id, [0, 1])]
    store.chunks.dispatched(job_id, [[0, 1]])
    assert store.chunks.claim_due() == []
    time.sleep(0.6)  # queued, but never finished: its task was lost
    assert store.chunks.claim_due() == [(job_id, [0, 1])]
    store.finish(job_id, {0: success(PREDICTION), 1: success(PREDICTION)}, MODEL)
    assert store.redis.zcard(PENDING) == 0


def test_pending_chunks_of_expired_jobs_are_dropped(redis_server):
    store = JobStore(Redis.from_url(redis_server.url.replace("/0", "/1")), ttl_s=60, dispatch_grace_s=0)
    job_id = str(uuid.uuid4())
    store.create(job_id, ["a.jpg"], {0: b"bytes"}, {}, chunks=[[0]])
    store.redis.delete(store.key(job_id))  # as the job's expiry would
    assert store.chunks.claim_due() == []
    assert store.redis.zcard(PENDING) == 0


def test_cancel_ends_queued_images_and_lets_running_ones_finish(store):
    job_id = new_job(store, total=3)
    store.finish(job_id, {2: success(PREDICTION)}, MODEL)
    assert store.mark_running(job_id, [0]).indices == [0]  # a worker has this chunk in hand
    cancelled = store.cancel(job_id)
    assert [image["status"] for image in cancelled.images] == [RUNNING, CANCELLED, DONE]
    assert not cancelled.finished and store.images(job_id, [1]) == [None]  # its bytes are gone
    assert store.mark_running(job_id, [1]).indices == []  # a worker that takes the cancelled chunk has nothing to run
    store.finish(job_id, {0: success(PREDICTION), 1: success(PREDICTION)}, MODEL)  # the running chunk ends as usual
    job = store.get(job_id)
    assert job.finished and [image["status"] for image in job.images] == [DONE, CANCELLED, DONE]
    assert store.cancel(job_id) == job  # again: nothing changes


def test_tasks_take_waiting_chunks_of_any_jobs_in_batches_oldest_first(store):
    """Batching across jobs (common/chunks.py): a task takes chunks from the head of the ready
    list up to the batch's images; a new delivery of it (its process died) takes the same chunks
    again until their results are written; then it takes on where the list stands."""
    queue = f"test-{uuid.uuid4()}"  # a queue of its own: no session worker takes from it
    jobs = [str(uuid.uuid4()) for _ in range(4)]
    listed = [store.create(job_id, ["a.jpg", "b.jpg", "c.jpg"][:len(chunks[0])], {i: b"x" for i in chunks[0]}, {},
                           chunks, queue=queue)
              for job_id, chunks in zip(jobs, ([[0]], [[0, 1]], [[0]], [[0, 1, 2]]))]
    assert listed == [True, False, False, False]  # only the first found the list empty: only it sends a wake-up
    assert store.chunks.take("task-1", queue, 4, 60) == (False, [(jobs[0], [0]), (jobs[1], [0, 1]), (jobs[2], [0])], 1)
    assert store.chunks.take("task-1", queue, 4, 60)[:2] == (True, [(jobs[0], [0]), (jobs[1], [0, 1]), (jobs[2], [0])])
    now, _ = store.redis.time()
    assert store.redis.zscore(PENDING, f"{jobs[0]} 0") > now + 30  # taken: due again only if never finished
    store.finish_all([(job_id, chunk, {i: success(PREDICTION) for i in chunk}, MODEL)
                      for job_id, chunk in [(jobs[0], [0]), (jobs[1], [0, 1]), (jobs[2], [0])]], "task-1")
    assert store.chunks.take("task-1", queue, 2, 60) == (False, [(jobs[3], [0, 1, 2])], 0)  # one chunk over the batch
    assert store.chunks.take("task-2", queue, 4, 60) == (False, [], 0)
    assert [statuses(store, job_id) for job_id in jobs[:3]] == [[DONE], [DONE, DONE], [DONE]]


def test_a_list_nobody_takes_from_is_stalled_once_per_grace(store):
    queue = f"test-{uuid.uuid4()}"
    chunks = ChunkScheduler(store.redis, "job:", dispatch_grace_s=0.3)
    assert not chunks.stalled(queue)  # empty
    assert chunks.make_ready(queue, "j", [[0], [1]])  # a wake-up is due
    assert chunks.stalled(queue) and not chunks.stalled(queue)  # a wake-up, then not again at once
    time.sleep(0.4)
    assert chunks.stalled(queue)
    chunks.take("t", queue, 16, 60)
    assert not chunks.stalled(queue)


def test_no_wake_up_is_due_while_a_task_lingers_on_the_list(store):
    """A task that finds the list empty lingers (noted until its linger ends) and is rung for each
    listing; a wake-up is due again once a take with no linger left ends it, or once it expires."""
    queue, jobs = f"test-{uuid.uuid4()}", [str(uuid.uuid4()) for _ in range(4)]
    bell = f"jobs:ready:{queue}:bell"

    def listed(job_id):
        return store.create(job_id, ["a.jpg"], {0: b"x"}, {}, [[0]], queue=queue)

    assert listed(jobs[0])  # nobody lingers: wake-up due
    assert store.chunks.take("t1", queue, 16, 60, linger_s=5)[1] == [(jobs[0], [0])]
    assert store.chunks.take("t2", queue, 16, 60, linger_s=5) == (False, [], 0)  # empty: t2 lingers
    assert store.redis.llen(bell) == 0  # the rings for what was taken are silenced
    assert not listed(jobs[1])  # no wake-up: the lingering task is rung instead
    assert store.chunks.await_ring(queue, 0.1)
    assert store.chunks.take("t2", queue, 16, 60, linger_s=5)[1] == [(jobs[1], [0])]  # taking: no longer lingering
    assert listed(jobs[2])
    store.chunks.take("t3", queue, 16, 60, linger_s=5)
    store.chunks.take("t4", queue, 16, 60, linger_s=5)
    assert store.chunks.take("t4", queue, 16, 60, linger_s=0) == (False, [], 0)  # t4 stops lingering
    assert listed(jobs[3])
    store.chunks.take("t5", queue, 16, 60)
    store.chunks.take("t6", queue, 16, 60, linger_s=0.2)  # a task that dies lingering is forgotten once its linger ends
    time.sleep(0.3)
    assert store.create(str(uuid.uuid4()), ["a.jpg"], {0: b"x"}, {}, [[0]], queue=queue)
    assert not store.chunks.await_ring(f"test-{uuid.uuid4()}", 0.1)  # a list nobody listed to: no ring


def test_heavy_chunks_are_never_listed_to_batch(store):
    queue = f"test-{uuid.uuid4()}"
    job_id = str(uuid.uuid4())
    store.create(job_id, ["a.jpg", "b.png", "c.jpg"], {i: b"x" for i in range(3)}, {}, [[0, 2], [1]], heavy=[1],
                 queue=queue)
    assert store.redis.lrange(f"jobs:ready:{queue}", 0, -1) == [f"{job_id} 0,2".encode()]
    assert store.heavy_images(job_id) == [1]


def test_batched_steps_survive_a_redis_that_lost_its_scripts(store):
    """A restarted Redis holds no scripts: the one-round-trip steps load them and go on."""
    job_id = new_job(store)
    store.redis.script_flush()
    assert [s.indices for s in store.mark_all_running([(job_id, [0, 1])])] == [[0, 1]]
    store.redis.script_flush()
    store.finish_all([(job_id, [0, 1], {0: success(PREDICTION), 1: success(PREDICTION)}, MODEL)], "task-x")
    assert statuses(store, job_id) == [DONE, DONE]
