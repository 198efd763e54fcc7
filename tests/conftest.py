"""Real parts for every test: a private redis-server, real Celery worker processes, the shipped
ONNX model (or MODEL_PATH), real image files. Nothing is mocked."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
from redis import Redis
from werkzeug.serving import make_server

from bench.procs import free_port, wait_for  # one copy of these helpers, shared with the benchmark
from common import workers
from common.settings import REPO, Settings
from webapp import create_app

DATA = Path(os.environ.get("SPORTS100_DATA", REPO.parent / "shared" / "data" / "sports100"))


class RedisServer:
    """A private redis-server on a free port; it can be stopped and started again (same data dir).
    With `tls`, it speaks TLS only, with a self-signed certificate that its URL tells clients to verify."""

    def __init__(self, directory: Path, appendonly: bool = False, password: str = "", tls: bool = False):
        self.port, self.directory, self.appendonly, self.password = free_port(), directory, appendonly, password
        self.tls = tls
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        if tls:
            self.url = f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={directory / 'cert.pem'}"
        self.process = None

    def start(self) -> "RedisServer":
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += self._tls_args()
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(self._pings, 10, f"redis-server on port {self.port}")
        return self

    def _tls_args(self) -> list[str]:
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                           check=True, capture_output=True)
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]

    def _pings(self) -> bool:
        try:
            return Redis.from_url(self.url).ping()
        except Exception:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Worker:
    """`celery worker` as its own process tree, as in production."""

    def __init__(self, settings: Settings, log: Path, env: dict | None = None):
        self.settings, self.log = settings, log
        self.env = os.environ | {"REDIS_URL": settings.redis_url, "MODEL_PATH": settings.model_path,
                                 "WORKER_PROCESSES": "1", "PYTHONUNBUFFERED": "1"} | (env or {})
        self.process = None

    def start(self, wait_ready: bool = True) -> "Worker":
        args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip"]
        # Its own session, so a test can signal the whole worker (parent and pool) at once.
        self.process = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        if wait_ready:
            redis = Redis.from_url(self.settings.redis_url)
            wait_for(lambda: workers.ready_workers(redis) or self.process.poll() is not None, 90, "a worker with its model")
            assert self.process.poll() is None, f"worker exited; see {self.log}"
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.process.pid, sig)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class WebServer:
    """gunicorn serving the app, as `make run` and the Docker image do."""

    def __init__(self, settings: Settings, log: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"REDIS_URL": settings.redis_url, "MODEL_PATH": settings.model_path,
                                 "PORT": str(self.port)} | (env or {})
        self.log = log

    def start(self) -> "WebServer":
        args = [sys.executable, "-m", "gunicorn", "--config", "webapp/gunicorn_conf.py", "webapp:create_app()"]
        self.process = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._healthy() or self.process.poll() is not None, 60, "gunicorn")
        assert self.process.poll() is None, f"gunicorn exited; see {self.log}"
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server) -> Settings:
    return Settings.from_env(redis_url=redis_server.url)


@pytest.fixture(scope="session")
def worker(settings, tmp_path_factory):
    process = Worker(settings, tmp_path_factory.mktemp("logs") / "worker.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app, worker):
    return app.test_client()


def serve(app):
    """Runs `app` on a real HTTP port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def live_server(app, worker):
    """The app on a real HTTP port, for the browser."""
    yield from serve(app)


# Limits so tight that a handful of valid photos (10-40 KB each) needs several requests.
TIGHT_LIMITS = {"max_image_bytes": 60_000, "max_request_bytes": 100_000, "max_images_per_job": 3}


@pytest.fixture(scope="session")
def tight_server(settings, worker):
    """The app with TIGHT_LIMITS on a real HTTP port, sharing the session's Redis and worker."""
    yield from serve(create_app(dataclasses.replace(settings, **TIGHT_LIMITS)))


def valid_images(count: int, start: int = 0) -> list[tuple[Path, str]]:
    """(path, true label) for real photos of the valid split, spread over the classes."""
    folders = sorted(p for p in (DATA / "valid").iterdir() if p.is_dir())
    picked = []
    for i in range(start, start + count):
        folder = folders[i % len(folders)]
        files = sorted(folder.iterdir())
        picked.append((files[(i // len(folders)) % len(files)], folder.name))
    return picked
