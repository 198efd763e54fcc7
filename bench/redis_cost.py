"""What one image costs Redis, for sizing it (README, "Adding a worker on another host"):
memory while it waits and once it is finished (kept for RESULT_TTL_S), and commands to submit
and to classify it. Submits JOBS jobs of 64 real photos with no worker, then runs one.

    python -m bench.redis_cost [JOBS]
"""
from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis

from common.settings import Settings
from harness import RedisServer, Worker, stopped_on_exit, valid_images, wait_for
from webapp import create_app

PER_JOB = 64


def commands(redis: Redis) -> int:
    return sum(stats["calls"] for stats in redis.info("commandstats").values())


def memory(redis: Redis) -> int:
    time.sleep(2)  # deletions of large values finish in a background thread (lazy free)
    return redis.info("memory")["used_memory"]


def submit(client, photos: list[Path]) -> str:
    files = [(io.BytesIO(path.read_bytes()), path.name) for path in photos]
    response = client.post("/api/v1/jobs", data={"file": files}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["status_url"]


def job_bytes(redis: Redis) -> int:
    """What the finished jobs' keys hold, counted exactly (not sampled)."""
    return sum(redis.memory_usage(key, samples=0) or 0 for key in redis.scan_iter(match="job:*", count=1000))


def measure(jobs: int, directory: Path) -> None:
    redis_server = RedisServer(directory / "redis").start()
    redis, images = Redis.from_url(redis_server.url), jobs * PER_JOB
    settings = Settings.from_env(redis_url=redis_server.url, rate_limit="", worker_processes=1)
    client = create_app(settings).test_client()
    photos = [[path for path, _ in valid_images(PER_JOB, start=PER_JOB * k)] for k in range(jobs)]
    file_bytes = sum(path.stat().st_size for job in photos for path in job)
    start_memory, start_commands = memory(redis), commands(redis)
    urls = [submit(client, job) for job in photos]
    queued, submitted = memory(redis) - start_memory, commands(redis) - start_commands
    print(f"{images} photos, {file_bytes / images / 1024:.1f} KiB each on average")
    print(f"waiting: {queued / images / 1024:.1f} KiB of used_memory each ({(queued - file_bytes) / images:.0f} B "
          f"beyond the file); {submitted / images:.2f} commands each to submit")
    Worker(settings, directory / "worker.log").start()
    before = commands(redis)
    for url in urls:
        wait_for(lambda: client.get(f"{url}?wait=10").get_json()["status"] == "done", 600, "the jobs")
    print(f"finished: {(memory(redis) - start_memory) / images:.0f} B of used_memory each, "
          f"{job_bytes(redis) / images:.0f} B in the jobs' keys; {(commands(redis) - before) / images:.2f} "
          f"commands each to classify (the worker's, its heartbeats', and the status polls')")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory, stopped_on_exit():  # processes stop, then it goes
        measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10, Path(directory))
