"""Redis round trips the web app makes for one lone photo, submitted with `POST /api/v1/jobs?wait=30`
(the submission and its wait in one exchange), counted per request: each command or pipeline the
app's Redis client sends is one. A real Redis and a real worker; the app runs in this process (its
test client), so only its own round trips are counted, not the worker's. The rate limit is off
and there is no canary: each would add its own round trip.

    python -m bench.round_trips [JOBS]
"""
from __future__ import annotations

import io
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis.connection import AbstractConnection

from common.settings import Settings
from harness import RedisServer, Worker, stopped_on_exit, valid_images
from webapp import create_app


@contextmanager
def counting_sends() -> Iterator[Counter]:
    """Counts every command or pipeline any Redis client in this process sends, while the block runs."""
    counts, send = Counter(), AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        counts["sent"] += 1
        return send(self, command, check_health)
    AbstractConnection.send_packed_command = counted
    try:
        yield counts
    finally:
        AbstractConnection.send_packed_command = send


def measure(jobs: int, directory: Path) -> list[int]:
    """Round trips of each of `jobs` lone photos (after one more, which also connects and subscribes)."""
    redis_server = RedisServer(directory / "redis").start()
    settings = Settings.from_env(redis_url=redis_server.url, rate_limit="", worker_processes=1)
    worker = Worker(settings, directory / "worker.log").start()
    client, per_job = create_app(settings).test_client(), []
    try:
        with counting_sends() as counts:
            for path, _ in valid_images(jobs + 1):
                before = counts["sent"]
                response = client.post("/api/v1/jobs?wait=30",
                                       data={"file": (io.BytesIO(path.read_bytes()), path.name)})
                assert response.status_code == 200, response.get_json()
                per_job.append(counts["sent"] - before)
    finally:
        worker.stop()
        redis_server.stop()
    return per_job[1:]


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with stopped_on_exit(), tempfile.TemporaryDirectory() as directory:
        per_job = measure(jobs, Path(directory))
    print(f"{jobs} lone photos, POST ?wait=30: Redis round trips per request: median "
          f"{statistics.median(per_job):g}, min {min(per_job)}, max {max(per_job)}")


if __name__ == "__main__":
    main()
