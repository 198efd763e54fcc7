"""The service's processes as the tests and the benchmark run them, each as in production and on
private ports: redis-server, a Celery worker, gunicorn serving the app, and the photos they are
given. Each process runs in its own session (process group), so stopping it reaches its children
too (gunicorn's workers, Celery's pool), a Ctrl-C at the terminal reaches only the caller (which
then stops them in order), and nothing outlives the run."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests
from redis import Redis

from common import workers
from common.queue import make_celery
from common.settings import REPO, Settings
from common.webhooks import WEBHOOK_QUEUE

DATA = Path(os.environ.get("SPORTS100_DATA", REPO.parent / "shared" / "data" / "sports100"))
# Limits so tight that a handful of valid photos (10-40 KB each) needs several requests.
TIGHT_LIMITS = {"max_image_bytes": 60_000, "max_request_bytes": 100_000, "max_images_per_job": 3}
START_TIMEOUT_S = 120  # loading the model on a busy machine takes a while


def valid_images(count: int, start: int = 0) -> list[tuple[Path, str]]:
    """(path, true label) for real photos of the valid split, taken from each class in turn, so
    even a few span the sports and the choice is the same on every run."""
    folders = sorted(p for p in (DATA / "valid").iterdir() if p.is_dir()) if (DATA / "valid").is_dir() else []
    if not folders:
        raise FileNotFoundError(f"no class folders under {DATA / 'valid'}; set SPORTS100_DATA")
    picked = []
    for i in range(start, start + count):
        files = sorted(folders[i % len(folders)].glob("*.jpg"))
        picked.append((files[(i // len(folders)) % len(files)], folders[i % len(folders)].name))
    return picked


def free_port() -> int:
    """A port nothing listens on now: private ports keep the run apart from a service in use."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app) -> Iterator[str]:
    """Runs a WSGI `app` on a real HTTP port in a thread (no gunicorn); yields its base URL."""
    from werkzeug.serving import make_server  # the web side's; the bench's workers never need it

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Polls `condition` until it is truthy and returns that; a wait that hangs fails, clearly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as the environment variables Settings.from_env reads back in a child process."""
    return {field.name.upper(): str(getattr(settings, field.name)) for field in dataclasses.fields(settings)}


def metrics_directory(log: Path) -> dict[str, str]:
    """Prometheus's multiprocess files beside the log (common/exposition.py), not in /tmp, so a
    process killed in a test leaves nothing behind the test's own folder."""
    return {"PROMETHEUS_MULTIPROC_DIR": str(log.with_suffix(".metrics"))}


class Service:
    """One started command with its log file; `stop()` may be called twice, or after a crash.
    `prefix` goes before the command, e.g. ("ip", "netns", "exec", "hostb") to run it on another
    (network namespace's) host; it must exec the command, not fork it, so the pid stays the same."""

    started: list["Service"] = []  # every one ever started, for stopped_on_exit()

    def __init__(self, name: str, log: Path, prefix: tuple[str, ...] = ()):
        self.name, self.log, self.process, self.prefix = name, log, None, list(prefix)

    def launch(self, args: list[str], env: dict) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.prefix + args, cwd=REPO,
                                            env=os.environ | {"PYTHONUNBUFFERED": "1"} | env,
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        if self not in Service.started:
            Service.started.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> bool:
        """True while running; raises if it died, since waiting on a dead process wastes the run."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.process.returncode}; see {self.log}")
        return True

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signals the whole group (e.g. a worker's parent and pool at once) and waits for its end."""
        self._signal_group(sig)
        self.process.wait(30)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM first (Celery finishes its task, gunicorn its requests), SIGKILL if that hangs;
        then SIGKILL to whatever is left of the group, so no orphaned child lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        self._signal_group(signal.SIGKILL)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The whole group stopped (SIGSTOP) for the block, then resumed: a server idle beside the
        one being measured can still take CPU from it (an idle LitServe peer, a quarter of a core)."""
        self._signal_group(signal.SIGSTOP)
        try:
            yield
        finally:
            self._signal_group(signal.SIGCONT)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)  # the group this process leads (start_new_session)
        except ProcessLookupError:
            pass  # the whole group is gone already


@contextmanager
def stopped_on_exit():
    """The backstop: on the way out, stops every process started inside that still runs, newest
    first (so a worker goes before its Redis), e.g. one started just as a signal cut a start short."""
    first = len(Service.started)
    try:
        yield
    finally:
        for service in reversed(Service.started[first:]):
            service.stop()


def _pings(url: str) -> bool:
    try:
        return bool(Redis.from_url(url).ping())
    except Exception:
        return False


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class RedisServer(Service):
    """A private redis-server on a free port; it can be stopped and started again (same data dir).
    With `tls`, it speaks TLS only, with a self-signed certificate that its URL tells clients to verify.
    `options` go to redis-server as they are, e.g. ("--maxmemory", "30mb"); it listens on `host`."""

    def __init__(self, directory: Path, appendonly: bool = False, password: str = "", tls: bool = False,
                 options: tuple[str, ...] = (), host: str = "127.0.0.1", prefix: tuple[str, ...] = ()):
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__("redis-server", directory / "redis.log", prefix)
        self.options, self.host = list(options), host
        self.port, self.directory, self.appendonly, self.password, self.tls = free_port(), directory, appendonly, password, tls
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}{host}:{self.port}/0"
        if tls:
            self.url = f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={directory / 'cert.pem'}"

    def start(self) -> "RedisServer":
        args = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.directory), "--save", "", "--appendonly", "yes" if self.appendonly else "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += self._tls_args()
        self.launch(args + self.options, {})
        wait_for(lambda: self.check_alive() and _pings(self.url), 30, f"redis-server on port {self.port}")
        return self

    def _tls_args(self) -> list[str]:
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                           check=True, capture_output=True)
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]


class Worker(Service):
    """`celery worker` with `settings` (its processes: settings.worker_processes, 0 meaning one per
    core), plus any variables in `env`."""

    def __init__(self, settings: Settings, log: Path, env: dict | None = None, queues: list[str] | None = None,
                 prefix: tuple[str, ...] = ()):
        super().__init__("celery worker", log, prefix)
        self.settings = settings
        self.env = settings_env(settings) | metrics_directory(log) | (env or {})
        self.queues = queues  # Celery's -Q/-X options, e.g. ["-X", "celery.heavy"]; default: every queue

    def start(self, wait_ready: bool = True) -> "Worker":
        """Ready once each of its pool processes has announced its model in Redis."""
        args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                "--hostname", f"harness-{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip",
                *(self.queues or [])]
        self.launch(args, self.env)
        if wait_ready:
            processes = dataclasses.replace(self.settings, worker_processes=int(self.env["WORKER_PROCESSES"])).processes
            wait_for(lambda: self.check_alive() and len(self._announced()) >= processes, START_TIMEOUT_S,
                     f"{processes} worker process(es) with the model loaded")
        return self

    def _announced(self) -> set[int]:
        """Which of this worker's processes say they are ready (announcements carry host:pid)."""
        tree = {self.pid, *(p.pid for p in psutil.Process(self.pid).children(recursive=True))}
        ready = {int(w["worker"].rsplit(":", 1)[1]) for w in workers.ready_workers(Redis.from_url(self.settings.redis_url))}
        return tree & ready


class WebhookWorker(Service):
    """`celery worker` for the webhook queue only, with threads (its tasks wait on other servers,
    not on the CPU), as `make run` starts it; ready once it answers a Celery ping."""

    def __init__(self, settings: Settings, log: Path, env: dict | None = None):
        super().__init__("webhook worker", log)
        self.settings = settings
        self.env = settings_env(settings) | metrics_directory(log) | (env or {})
        self.node = f"webhooks-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"

    def start(self) -> "WebhookWorker":
        args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                "--queues", WEBHOOK_QUEUE, "--pool", "threads", "--concurrency", "4", "--hostname", self.node,
                "--without-mingle", "--without-gossip"]
        self.launch(args, self.env)
        celery = make_celery(self.settings)
        wait_for(lambda: self.check_alive() and celery.control.ping(destination=[self.node], timeout=1),
                 START_TIMEOUT_S, "the webhook worker to answer a ping")
        return self


class WebServer(Service):
    """gunicorn with the production config, bound to `host` (the loopback) on a free port."""

    def __init__(self, settings: Settings, log: Path, env: dict | None = None, host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = ()):
        super().__init__("gunicorn", log, prefix)
        self.port, self.host = free_port(), host
        self.url = f"http://{host}:{self.port}"
        self.env = settings_env(settings) | metrics_directory(log) | (env or {})

    def start(self) -> "WebServer":
        args = [sys.executable, "-m", "gunicorn", "--config", "webapp/gunicorn_conf.py",
                "--bind", f"{self.host}:{self.port}", "webapp:create_app()"]
        self.launch(args, self.env)
        wait_for(lambda: self.check_alive() and http_ok(f"{self.url}/health"), START_TIMEOUT_S, "gunicorn")
        return self
