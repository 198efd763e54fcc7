"""`make run`'s script (bin/run) as a user runs it: the whole stack under its supervisor, stopped by
signals, with a part killed under it. Real Redis, worker and web processes; nothing is mocked."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests
from redis import Redis

from common import workers
from common.settings import REPO
from harness import free_port, valid_images, wait_for

STOPPED_WITHIN_S = 15  # issue 11: nothing of the run is left after this


class Run:
    """bin/run in its own session, as a terminal runs it in its own process group."""

    def __init__(self, var_dir: Path, log: Path, port: int | None = None, **env: str):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HOST")} | {
            "VENV": sys.prefix, "PORT": str(self.port), "VAR_DIR": str(var_dir), "REDIS_PORT": str(free_port()),
            "WORKER_PROCESSES": "1", "WEB_PROCESSES": "1"} | env
        with log.open("ab") as out:
            self.process = subprocess.Popen([REPO / "bin" / "run"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.redis = Redis(port=int(env["REDIS_PORT"]))
        self.seen: set[psutil.Process] = set()  # every process of the run a test looked at

    def ready(self) -> dict | None:
        """/ready's document once the web app answers and a worker has its model, else None."""
        try:
            answer = requests.get(f"{self.url}/ready", timeout=2)
        except requests.RequestException:
            return None
        return answer.json() if answer.ok else None

    def wait_ready(self) -> "Run":
        wait_for(lambda: self.ready() or self.process.poll() is not None, 120, "make run's stack")
        assert self.process.poll() is None, "bin/run exited while starting"
        return self

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        processes = [root] + root.children(recursive=True)
        self.seen.update(processes)
        return processes

    def program(self, name: str) -> psutil.Process | None:
        """The main process of one of the supervisor's programs (celery, gunicorn), if it runs."""
        return next((p for p in self.tree() if name in command(p) and name not in command(p.parent())), None)

    def kill_all(self) -> None:
        """The test's own backstop: whatever is left after a failed assertion goes."""
        try:
            self.tree()
        except psutil.NoSuchProcess:
            pass
        for process in self.seen:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(10)


def command(process: psutil.Process | None) -> str:
    try:
        return " ".join(process.cmdline()) if process else ""
    except psutil.Error:  # gone meanwhile
        return ""


def survivors(processes: list[psutil.Process]) -> list[str]:
    _, alive = psutil.wait_procs(processes, timeout=STOPPED_WITHIN_S)
    return [command(p) for p in alive if p.is_running()]


def submit(url: str, count: int) -> str:
    files = [("file", (path.name, path.read_bytes())) for path, _ in valid_images(count)]
    answer = requests.post(f"{url}/api/v1/jobs", files=files, timeout=60)
    assert answer.status_code == 202, answer.text
    return answer.json()["status_url"]


def finished_job(url: str, status_url: str) -> dict:
    def done() -> dict | None:
        job = requests.get(f"{url}{status_url}?wait=5", timeout=30).json()
        return job if job["status"] == "done" else None
    return wait_for(done, 120, "the job to finish")


@pytest.fixture
def runs(tmp_path):
    """Starts bin/run as often as a test asks (same data dir); kills whatever a failed test left."""
    started: list[Run] = []

    def start(**kwargs) -> Run:
        run = Run(tmp_path / "var", tmp_path / f"run{len(started)}.log", **kwargs)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill_all()


def test_ctrl_c_stops_everything_and_the_accepted_job_survives(runs):
    # One image per task, so most of the job is still queued when the signal comes.
    first = runs(CHUNK_SIZE="1").wait_ready()
    status_url = submit(first.url, 12)
    processes = first.tree()
    assert len(processes) >= 7  # bin/run, supervisord, Redis, Celery and its pool process, gunicorn and its worker

    os.killpg(first.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert survivors(processes) == []

    second = runs(port=first.port).wait_ready()
    job = finished_job(second.url, status_url)
    assert job["progress"] == {"done": 12, "failed": 0, "total": 12}

    # SIGTERM to the run's own process only, as a parent (make, systemd, an IDE) sends it.
    processes = second.tree()
    second.process.send_signal(signal.SIGTERM)
    assert survivors(processes) == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One run of bin/run for the tests that leave it running."""
    tmp = tmp_path_factory.mktemp("run")
    run = Run(tmp / "var", tmp / "run.log").wait_ready()
    yield run
    run.kill_all()


def test_a_killed_worker_is_restarted_while_the_web_app_keeps_answering(stack):
    killed = stack.program("celery")
    pool = killed.children()
    killed.kill()
    killed.wait(10)

    def a_new_worker_ready() -> bool:
        assert requests.get(f"{stack.url}/health", timeout=5).ok  # the web app answers all along
        worker = stack.program("celery")
        if worker is None or worker.pid == killed.pid:
            return False
        suffixes = tuple(f":{child.pid}" for child in worker.children())  # worker ids end in their pid
        return bool(suffixes) and any(w["worker"].endswith(suffixes) for w in workers.ready_workers(stack.redis))

    wait_for(a_new_worker_ready, 90, "the supervisor's new worker")
    assert survivors(pool) == []  # the dead worker's pool processes did not linger
    job = finished_job(stack.url, submit(stack.url, 3))
    assert job["progress"] == {"done": 3, "failed": 0, "total": 3}


def test_redis_keeps_what_it_has_when_full_and_the_web_app_listens_on_loopback(stack):
    config = stack.redis.config_get("maxmemory*")
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == 3 * 1024**3
    assert stack.redis.config_get("appendonly")["appendonly"] == "yes"
    gunicorn = stack.program("gunicorn")
    listening = {c.laddr for c in gunicorn.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", stack.port)}


def test_a_part_that_cannot_start_ends_the_run(runs, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = runs(port=taken.getsockname()[1])
        # gunicorn cannot bind: after its retries the supervisor stops everything and exits.
        wait_for(lambda: run.process.poll() is not None, 120, "bin/run to give up")
    var_dir = str(tmp_path / "var")
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if var_dir in " ".join(p.info["cmdline"] or [])] == []
