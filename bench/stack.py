"""The servers under test, each on a private port: our service (redis-server, one Celery worker,
gunicorn with the production config; harness.py starts each), the baseline and the peer. Context managers,
so every exit path, an error or Ctrl-C included, stops what was started."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from common.settings import Settings
from harness import START_TIMEOUT_S, RedisServer, Service, WebServer, Worker, http_ok, free_port, wait_for


class OneServer:
    """`python -m <module> --port P --model PATH` in its own process, ready once /health answers:
    the baseline (bench.baseline) or the peer (bench.peer)."""

    def __init__(self, module: str, model_path: str, logs: Path):
        name = module.rsplit(".", 1)[-1]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Service(name, logs / f"{name}.log")
        self.process.launch([sys.executable, "-m", module, "--port", str(self.port), "--model", model_path], {})

    def __enter__(self) -> "OneServer":
        try:
            wait_for(lambda: self.process.check_alive() and http_ok(f"{self.url}/health"),
                     START_TIMEOUT_S, self.process.name)
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.process.stop()


class ServiceStack:
    """Our service as `bin/run` starts it, but on free ports, with rate limiting off (the load
    comes from one address) and an in-memory Redis (nothing left on disk)."""

    def __init__(self, model_path: str, logs: Path, worker_processes: int):
        self.logs, self.worker_processes = logs, worker_processes
        self.settings = Settings.from_env(model_path=model_path, rate_limit="")
        self.redis = self.worker = self.web = None

    @property
    def url(self) -> str:
        return self.web.url

    def __enter__(self) -> "ServiceStack":
        try:
            self.redis = RedisServer(self.logs / "redis").start()
            self.settings = dataclasses.replace(self.settings, redis_url=self.redis.url)
            self.start_worker(self.worker_processes)
            self.web = WebServer(self.settings, self.logs / "web.log").start()
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

    def start_worker(self, processes: int) -> None:
        """(Re)starts the worker with `processes` pool processes, each splitting the cores as in
        production (WORKER_THREADS unset: cores / processes), ready when all have announced."""
        if self.worker is not None:
            self.worker.stop()
        self.worker_processes = processes
        settings = dataclasses.replace(self.settings, worker_processes=processes)
        self.worker = Worker(settings, self.logs / "worker.log").start()
