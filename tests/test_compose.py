"""The Docker files, checked without a Docker engine: docker-compose.yml against the compose schema
(check-jsonschema's vendored copy, so offline), exact image tags, restart policies, Redis's data
settings, and the worker image's health check run for real against a worker."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from redis import Redis

from common import workers
from common.settings import REPO, Settings
from harness import RedisServer, wait_for

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILES = sorted(REPO.glob("Dockerfile.*"))
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?$")  # e.g. python:3.11.14-slim-bookworm


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def dockerfile_instructions(path: Path, name: str) -> list[str]:
    """The arguments of each `name` instruction, with continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")]


def test_the_compose_file_matches_the_compose_schema():
    check = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                            str(COMPOSE)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_image_is_pinned_to_an_exact_version():
    images = [s["image"] for s in services().values() if "image" in s]
    images += [base for path in DOCKERFILES for base in dockerfile_instructions(path, "FROM")]
    assert len(images) >= 3
    assert [image for image in images if not EXACT_TAG.match(image)] == []


def test_every_service_restarts_and_redis_keeps_accepted_jobs():
    assert {name: s.get("restart") for name, s in services().items()} == dict.fromkeys(services(), "unless-stopped")
    redis = services()["redis"]["command"]
    options = dict(zip(redis[1::2], redis[2::2]))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--maxmemory"]


def test_the_worker_runs_as_many_processes_as_the_settings_say_by_default():
    default = services()["worker"]["environment"]["WORKER_PROCESSES"]
    assert default == f"${{WORKER_PROCESSES:-{Settings().worker_processes}}}"


def healthcheck_passes(env: dict) -> bool:
    [instruction] = dockerfile_instructions(REPO / "Dockerfile.worker", "HEALTHCHECK")
    command = instruction.split(" CMD ", 1)[1]
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=60).returncode == 0


def test_the_worker_image_health_check_follows_its_worker(tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    env = os.environ | {"REDIS_URL": redis.url, "WORKER_PROCESSES": "1",
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Celery's own default node name (celery@<host name>), as the worker image runs it.
    args = [Path(sys.executable).parent / "celery", "-A", "worker.celery_app", "worker", "--loglevel", "WARNING"]
    worker = subprocess.Popen(args, cwd=REPO, env=env, stdout=(tmp_path / "worker.log").open("wb"),
                              stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: workers.ready_workers(Redis.from_url(redis.url)) or worker.poll() is not None, 90, "the worker")
        # Its pool announces itself a moment before the main process answers remote control.
        wait_for(lambda: worker.poll() is not None or healthcheck_passes(env), 60, "a passing health check")
        assert worker.poll() is None
        worker.terminate()
        worker.wait(30)
        assert not healthcheck_passes(env)
    finally:
        worker.kill()
        redis.stop()
