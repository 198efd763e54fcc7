"""Prometheus metrics and JSON logs, read from the running stack: gunicorn with two processes (its
multiprocess mode), a Celery worker with two pool processes serving its own metrics port, a
private Redis, real photos. Counters are read before and after, so each check is a difference."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.settings import REPO, Settings
from harness import RedisServer, WebServer, Worker, free_port, valid_images, wait_for
from webapp import create_app

IMAGES = 20  # with CHUNK_SIZE 16: two chunks, so two inference runs
NOT_AN_IMAGE = (b"this is text, not a photo", "notes.jpg")
TOKEN = "scrape-token"


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scrape: dict, name: str, **labels) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in scrape.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    directory = tmp_path_factory.mktemp("metrics")
    redis = RedisServer(directory / "redis").start()
    settings = Settings.from_env(redis_url=redis.url, worker_processes=2, web_processes=2, log_format="json",
                                 worker_metrics_port=free_port(), rate_limit="", metrics_token=TOKEN)
    worker = Worker(settings, directory / "worker.log").start()
    web_files = directory / "web-metrics"
    web = WebServer(settings, directory / "web.log", env={"PROMETHEUS_MULTIPROC_DIR": str(web_files)}).start()
    yield settings, web, worker, web_files
    web.stop()
    worker.stop()
    redis.stop()


def scrape(url: str) -> dict:
    response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


def run_job(base_url: str) -> dict:
    files = [("file", (path.name, path.read_bytes(), "image/jpeg")) for path, _ in valid_images(IMAGES)]
    files.append(("file", (NOT_AN_IMAGE[1], NOT_AN_IMAGE[0], "image/jpeg")))
    accepted = requests.post(f"{base_url}/api/v1/jobs", files=files, timeout=30)
    assert accepted.status_code == 202, accepted.text
    job = requests.get(f"{base_url}{accepted.json()['status_url']}?wait=30", timeout=40).json()
    assert job["status"] == "done" and job["progress"] == {"done": IMAGES, "failed": 1, "total": IMAGES + 1}, job
    return job


def test_a_job_moves_the_counters_by_its_images(stack):
    settings, web, worker, _ = stack
    worker_url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    web_before, worker_before = scrape(f"{web.url}/metrics"), scrape(worker_url)
    job = run_job(web.url)
    web_after, worker_after = scrape(f"{web.url}/metrics"), scrape(worker_url)

    def moved(before, after, name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)
    assert moved(web_before, web_after, "sportclf_jobs_submitted_total") == 1
    assert moved(worker_before, worker_after, "sportclf_jobs_finished_total") == 1
    assert moved(web_before, web_after, "sportclf_images_submitted_total") == IMAGES + 1
    assert moved(web_before, web_after, "sportclf_images_finished_total", outcome="failed", code="not_an_image") == 1
    assert moved(web_before, web_after, "sportclf_decode_failures_total", code="not_an_image") == 1
    model = {"model": job["model"]["name"], "version": job["model"]["version"]}
    # The inference ran in the pool processes; the parent's port shows their histograms.
    assert moved(worker_before, worker_after, "sportclf_images_finished_total", outcome="done", **model) == IMAGES
    assert moved(worker_before, worker_after, "sportclf_inference_batch_size_count", **model) == 2
    assert moved(worker_before, worker_after, "sportclf_inference_batch_size_sum", **model) == IMAGES
    assert moved(worker_before, worker_after, "sportclf_inference_seconds_count", **model) == 2
    assert moved(worker_before, worker_after, "sportclf_top1_confidence_count", **model) == IMAGES
    assert moved(worker_before, worker_after, "sportclf_time_to_result_seconds_count") == IMAGES


def test_every_gunicorn_process_counts(stack):
    """Requests until both gunicorn processes have answered some (each writes files named by its
    pid); the scrape, answered by one of them, counts all."""
    _, web, _, web_files = stack
    before = scrape(f"{web.url}/metrics")
    sent = 0
    while len({f.stem.rsplit("_", 1)[1] for f in web_files.glob("counter_*.db")}) < 2 and sent < 2000:
        with requests.Session() as fresh:  # a new connection each time, so either process may take it
            assert fresh.get(f"{web.url}/health", timeout=10).status_code == 200
        sent += 1
    assert len(list(web_files.glob("counter_*.db"))) >= 2, "one gunicorn process answered every request"
    after = scrape(f"{web.url}/metrics")
    labels = {"route": "/health", "method": "GET", "status": "200"}
    assert value(after, "sportclf_http_requests_total", **labels) - value(before, "sportclf_http_requests_total", **labels) == sent
    assert total(after, "sportclf_http_request_duration_seconds_count", route="/health") >= sent


def test_service_state_is_read_from_redis(stack):
    _, web, worker, _ = stack
    state = scrape(f"{web.url}/metrics")
    assert value(state, "sportclf_redis_up") == 1
    assert value(state, "sportclf_queue_depth", queue="celery") == 0
    assert value(state, "sportclf_pending_chunks") == 0
    ages = [v for (name, _), v in state.items() if name == "sportclf_worker_heartbeat_age_seconds"]
    assert len(ages) == 2 and all(0 <= age <= 30 for age in ages)  # one per pool process


def test_queued_work_shows_in_the_gauges(fresh_settings):
    """No worker serves this database: what is submitted stays queued and pending; a cancel is final."""
    client = create_app(fresh_settings()).test_client()
    (path, _), = valid_images(1)
    accepted = client.post("/api/v1/jobs", data={"file": (path.open("rb"), path.name)}).get_json()
    state = samples(client.get("/metrics").get_data(as_text=True))
    assert value(state, "sportclf_queue_depth", queue="celery") == 1
    assert value(state, "sportclf_pending_chunks") == 1
    for _ in range(2):  # cancelling twice cancels once
        assert client.delete(accepted["status_url"]).status_code == 200
    state = samples(client.get("/metrics").get_data(as_text=True))
    assert total(state, "sportclf_images_finished_total", outcome="cancelled") == 1
    assert value(state, "sportclf_jobs_finished_total") == 1


def test_a_metrics_token_guards_the_scrape(stack):
    settings, web, _, _ = stack
    for url in (f"{web.url}/metrics", f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"):
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    refused = requests.get(f"{web.url}/metrics", timeout=10)
    assert refused.json()["error"]["code"] == "unauthorized" and refused.headers["WWW-Authenticate"] == "Bearer"


def json_lines(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_json_logs_carry_the_job(stack):
    settings, web, worker, _ = stack
    job = run_job(web.url)

    def chunk_lines():
        return [line for line in json_lines(worker.log) if line.get("job_id") == job["job_id"]
                and line["message"].startswith("chunk written")]
    written = wait_for(lambda: len(chunk_lines()) == 2 and chunk_lines(), 30, "the worker's chunk lines")
    for line in written:
        assert line["model"] == job["model"]["name"] and line["version"] == job["model"]["version"]
        assert line["duration_s"] > 0 and line["chunk"] and line["level"] == "INFO"
    # Celery's own lines are JSON too; a light job's chunks run in a batch task (a wake-up for the
    # queue, of any jobs), so the job is named by the chunk lines above, not by the task's.
    celery_lines = [line for line in json_lines(worker.log) if line["logger"].startswith("celery")]
    assert any(line["message"].startswith("Task worker.classify_waiting") for line in celery_lines)
    access = wait_for(lambda: [line for line in json_lines(web.log) if line["logger"] == "gunicorn.access"
                               and line.get("path") == f"/api/v1/jobs/{job['job_id']}"], 30, "the access line")
    assert access[0]["status"] == 200 and access[0]["method"] == "GET"
    accepted = [line for line in json_lines(web.log) if line.get("job_id") == job["job_id"]]
    assert accepted and accepted[0]["message"].startswith("job accepted")


def test_a_chunk_written_twice_counts_once(redis_server):
    """A redelivered task writes nothing new (common/jobs.py), so it moves no counter either."""
    from prometheus_client import REGISTRY  # this test process's own metrics (no multiprocess mode here)
    from redis import Redis

    from common.jobs import JobStore, success
    from worker.metrics import record_chunk
    store, job_id, model = JobStore(Redis.from_url(redis_server.url), ttl_s=60), str(uuid.uuid4()), {"name": "m", "version": "1"}
    store.create(job_id, ["a.jpg"], {0: b"bytes"}, {})
    results = {0: success({"top3": [{"label": "a", "display_name": "A", "confidence": 0.9}] * 3, "confident": True})}
    labels = {"outcome": "done", "code": "", "model": "m", "version": "1"}
    before = REGISTRY.get_sample_value("sportclf_images_finished_total", labels) or 0
    for _ in range(2):
        record_chunk(job_id, [0], model, results, store.finish(job_id, results, model))
    assert REGISTRY.get_sample_value("sportclf_images_finished_total", labels) - before == 1


def test_gunicorn_names_the_directory_before_prometheus_client_loads(settings):
    """Without PROMETHEUS_MULTIPROC_DIR (compose, a bare gunicorn) the configuration makes one
    before anything it imports loads prometheus_client, so the app's metrics are multiprocess ones."""
    probe = ("import shutil, webapp.gunicorn_conf as conf\n"
             "from webapp import create_app\n"
             "create_app()\n"
             "from prometheus_client import values\n"
             "print(values.ValueClass.__name__, conf.metrics_directory.is_dir())\n"
             "shutil.rmtree(conf.metrics_directory)")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {"REDIS_URL": settings.redis_url}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["MmapedValue", "True"], out.stderr
