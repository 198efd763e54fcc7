"""The servers under test, each on a private port: our service (redis-server, one Celery worker,
gunicorn with the production config) and the baseline. Context managers, so every exit path,
an error or Ctrl-C included, stops what was started."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import requests
from redis import Redis

from bench.procs import Process, free_port, wait_for
from common import workers

START_TIMEOUT_S = 120  # loading the model on a busy 2-core machine takes a while


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Baseline:
    """`python -m bench.baseline` in its own process, ready once /health answers."""

    def __init__(self, model_path: str, logs: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "bench.baseline", "--port", str(self.port), "--model", model_path]
        self.process = Process("baseline", args, os.environ | {"PYTHONUNBUFFERED": "1"}, logs / "baseline.log")

    def __enter__(self) -> "Baseline":
        try:
            wait_for(lambda: self.process.check_alive() and _http_ok(f"{self.url}/health"),
                     START_TIMEOUT_S, "the baseline")
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()


class ServiceStack:
    """Our service as `bin/run` starts it, but on free ports, with rate limiting off (RATE_LIMIT
    empty: the load comes from one address) and an in-memory Redis (nothing left on disk)."""

    def __init__(self, model_path: str, logs: Path, worker_processes: int):
        self.logs, self.worker_processes = logs, worker_processes
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"REDIS_URL": self.redis_url, "MODEL_PATH": model_path, "RATE_LIMIT": "",
                                 "PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        self.redis = self.worker = self.web = None

    def __enter__(self) -> "ServiceStack":
        try:
            self._start_redis()
            self.start_worker(self.worker_processes)
            self._start_web()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raises if a part died: the phases after it would only measure the wreck."""
        for process in (self.redis, self.worker, self.web):
            process.check_alive()

    def stop(self) -> None:
        """Front to back, so no part sees another vanish while it still has work."""
        for process in (self.web, self.worker, self.redis):
            if process is not None:
                process.stop()

    def _start_redis(self) -> None:
        port = self.redis_url.rsplit(":", 1)[1].split("/")[0]
        args = [shutil.which("redis-server") or "redis-server", "--port", port, "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.logs)]
        self.redis = Process("redis-server", args, self.env, self.logs / "redis.log")
        client = Redis.from_url(self.redis_url)
        wait_for(lambda: self.redis.check_alive() and _pings(client), 30, "redis-server")

    def start_worker(self, processes: int) -> None:
        """(Re)starts the worker with `processes` pool processes, each splitting the cores as in
        production (WORKER_THREADS unset: cores / processes), ready when all have announced."""
        if self.worker is not None:
            self.worker.stop()
        self.worker_processes = processes
        client = Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=workers.PREFIX + "*"):
            client.delete(key)  # announcements of the stopped worker must not count as ready
        env = self.env | {"WORKER_PROCESSES": str(processes)}
        args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                "--without-mingle", "--without-gossip"]
        self.worker = Process("celery worker", args, env, self.logs / "worker.log")
        wait_for(lambda: self.worker.check_alive() and len(workers.ready_workers(client)) >= processes,
                 START_TIMEOUT_S, f"{processes} worker process(es) with the model loaded")

    def _start_web(self) -> None:
        # The production config (gthread workers, threads for long polls); loopback bind only.
        args = [sys.executable, "-m", "gunicorn", "--config", "webapp/gunicorn_conf.py",
                "--bind", f"127.0.0.1:{self.port}", "webapp:create_app()"]
        self.web = Process("gunicorn", args, self.env, self.logs / "web.log")
        wait_for(lambda: self.web.check_alive() and _http_ok(f"{self.url}/ready"), START_TIMEOUT_S, "the web app")


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
