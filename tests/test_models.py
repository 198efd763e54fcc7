"""Several models at once: the registry, a canary split, a pinned model, promotion and roll-back
without a restart, a shadow model's agreement, and /ready per model. Two real worker processes
each serve one real ONNX model (the shipped SERVED one and its OTHER original), over a private Redis."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis import Redis

from common import routing, workers
from common.jobs import JobStore
from common.queue import DEFAULT_MODEL, backlog_key, queue_for
from common.registry import entry, registry, served_models
from common.routing import Routing, Split
from common.settings import REPO, Settings
from harness import RedisServer, Worker, serve, valid_images, wait_for
from webapp import create_app, models

SERVED, OTHER = DEFAULT_MODEL, "sports100-lite0-int8@1.0.0"  # the shipped model and the one it replaced
KEY = {"X-API-Key": "k3y"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A private Redis with one worker per model; yields the settings the web apps use."""
    redis = RedisServer(tmp_path_factory.mktemp("models-redis")).start()
    settings = Settings.from_env(redis_url=redis.url, worker_processes=1, api_key=KEY["X-API-Key"])
    logs = tmp_path_factory.mktemp("models-logs")
    started = [Worker(dataclasses.replace(settings, worker_models=model), logs / f"{model}.log").start()
               for model in (SERVED, OTHER)]
    yield settings
    for worker in started:
        worker.stop()
    redis.stop()


@pytest.fixture
def web(stack):
    """A web app on the stack, starting from the settings' routing (whatever an earlier test set)."""
    Redis.from_url(stack.redis_url).delete("models:routing")
    return create_app(stack).test_client()


def submit(client, count: int = 1, start: int = 0, query: str = "") -> str:
    files = [(io.BytesIO(path.read_bytes()), path.name) for path, _ in valid_images(count, start)]
    response = client.post(f"/api/v1/jobs{query}", data={"file": files}, content_type="multipart/form-data",
                           headers=KEY)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["status_url"]


def finished(client, status_url: str) -> dict:
    job = client.get(f"{status_url}?wait=30").get_json()
    assert job["status"] == "done" and job["progress"]["failed"] == 0, job
    return job


def model_of(job: dict) -> str:
    return f"{job['model']['name']}@{job['model']['version']}"


def patch(client, body: dict, headers: dict = KEY):
    return client.patch("/api/v1/models/routing", json=body, headers=headers)


def test_the_registry_names_each_model_by_its_card():
    settings = Settings()
    assert {SERVED, OTHER} <= set(registry(settings))  # models/ may hold more
    assert entry(settings.model_path).id == DEFAULT_MODEL  # the shipped model keeps Celery's default queue
    assert queue_for(DEFAULT_MODEL) == "celery" and queue_for(OTHER) != "celery"
    assert [m.id for m in served_models(dataclasses.replace(settings, worker_models=f"{OTHER},{SERVED}"))] == [OTHER, SERVED]
    with pytest.raises(ValueError, match="not in the registry"):
        served_models(dataclasses.replace(settings, worker_models="nope@1"))


def test_routing_weights_jobs_and_parses_its_settings():
    ten_percent = Routing(SERVED, canary=Split(OTHER, 10))
    assert ten_percent.shares() == {SERVED: 90.0, OTHER: 10.0}
    for first in (1, 7, 1234):  # any run of 10 jobs: exactly 1 to the canary
        assert Counter(ten_percent.choose(n) for n in range(first, first + 10))[OTHER] == 1
    assert Counter(Routing(SERVED, canary=Split(OTHER, 2.5)).choose(n) for n in range(1, 201))[OTHER] == 5
    rng = random.Random(0)
    shadowed = Counter(Routing(SERVED, shadow=Split(OTHER, 5)).shadow_for(SERVED, rng) for _ in range(10_000))
    assert 400 < shadowed[OTHER] < 600 and Routing(SERVED, shadow=Split(OTHER, 100)).shadow_for(OTHER, rng) is None
    assert Split.parse(f"{OTHER}:5", "MODEL_SHADOW") == Split(OTHER, 5)
    for bad in (OTHER, f"{OTHER}:lots", f"{OTHER}:101", ":5"):
        with pytest.raises(ValueError, match="MODEL_CANARY"):
            Split.parse(bad, "MODEL_CANARY")


def test_a_broken_routing_in_redis_falls_back_to_the_settings(fresh_settings):
    redis = Redis.from_url(fresh_settings().redis_url)
    redis.hset("models:routing", mapping={"active": OTHER, "canary": "half"})
    assert routing.load(redis, Routing(SERVED)) == Routing(SERVED)
    redis.hset("models:routing", "canary", f"{OTHER}:5")
    assert routing.load(redis, Routing(SERVED)) == Routing(OTHER, canary=Split(OTHER, 5), source="redis")


def test_settings_naming_an_unknown_model_stop_the_web_app(stack):
    with pytest.raises(ValueError, match="nope@1"):
        create_app(dataclasses.replace(stack, model_canary="nope@1:10"))


def test_models_lists_both_with_their_figures_and_workers(web):
    body = web.get("/api/v1/models").get_json()
    assert body["routing"] == {"active": SERVED, "canary": None, "shadow": None, "source": "settings"}
    models = {m["id"]: m for m in body["models"] if m["id"] in (SERVED, OTHER)}
    assert len(models) == 2
    for model_id, model in models.items():
        card = registry(Settings())[model_id].card
        assert model["accuracy"] == card["metrics"]["valid"]
        assert model["real_world_accuracy"] == card["metrics"]["wild-dev"]
        assert model["workers"] == 1
    assert (models[SERVED]["share"], models[OTHER]["share"]) == (100, 0)


def test_a_pinned_model_classifies_the_job(web):
    for model in (OTHER, SERVED):
        job = finished(web, submit(web, 2, query=f"?model={model}"))
        assert model_of(job) == model
    response = web.post("/api/v1/jobs?model=nope@1", data={"file": [(io.BytesIO(b"x"), "x.jpg")]}, headers=KEY,
                        content_type="multipart/form-data")
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "unknown_model"
    assert OTHER in response.get_json()["error"]["message"] and SERVED in response.get_json()["error"]["message"]


def test_a_canary_takes_a_share_then_promotion_and_rollback_apply_without_a_restart(web, stack):
    other_process = create_app(stack).test_client()  # a second web process: it sees every change too
    assert patch(web, {"canary": {"model": OTHER, "share": 50}}).status_code == 200
    urls = [submit(other_process, 1, start=i) for i in range(40)]
    counts = Counter(model_of(finished(web, url)) for url in urls)
    assert counts == {SERVED: 20, OTHER: 20}  # jobs are numbered across web processes: an even split
    assert patch(web, {"active": OTHER, "canary": None}).get_json()["active"] == OTHER  # promote
    assert {model_of(finished(web, submit(other_process, 1, start=i))) for i in range(5)} == {OTHER}
    assert other_process.get("/api/v1/model").get_json()["name"] == "sports100-lite0-int8"
    assert patch(web, {"active": SERVED}).status_code == 200  # roll back
    assert {model_of(finished(web, submit(other_process, 1, start=i))) for i in range(5)} == {SERVED}


def test_a_routing_change_reaches_a_submission_still_uploading(web, stack):
    """The guard reads the routing before the body arrives; a body that took longer than a moment
    is routed by the routing in force once it has arrived."""
    path, _ = valid_images(1)[0]
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
            + path.read_bytes() + b"\r\n--b--\r\n")
    head = (f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY['X-API-Key']}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    for url in serve(create_app(stack)):
        with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port)) as sock:
            sock.sendall(head + body[:100])
            time.sleep(0.5)  # the app has the headers: its guard has read the routing
            assert patch(web, {"active": OTHER}).status_code == 200
            time.sleep(models.ROUTING_FRESH_S + 0.5)
            sock.sendall(body[100:])
            answer = sock.makefile("rb").read()
        assert answer.split(b" ", 2)[1] == b"202", answer[:300]
        status_url = json.loads(answer.partition(b"\r\n\r\n")[2])["status_url"]
        assert model_of(finished(web, status_url)) == OTHER


def test_routing_changes_need_the_api_key(web, stack):
    assert patch(web, {"active": OTHER}, headers={}).status_code == 401
    assert patch(web, {"active": "nope@1"}).get_json()["error"]["code"] == "unknown_model"
    assert patch(web, {"canary": {"model": OTHER, "share": 150}}).status_code == 422
    open_app = create_app(dataclasses.replace(stack, api_key="")).test_client()
    assert patch(open_app, {"active": OTHER}, headers={}).get_json()["error"]["code"] == "routing_locked"
    assert web.get("/api/v1/models").get_json()["routing"]["active"] == SERVED


def test_a_shadow_model_counts_agreement_unseen_by_clients(web, stack):
    assert patch(web, {"shadow": {"model": OTHER, "share": 100}}).status_code == 200
    jobs = [finished(web, submit(web, 3, start=3 * i)) for i in range(2)]
    assert {model_of(job) for job in jobs} == {SERVED}  # clients see only the job's own model

    def stats():
        shadow = {m["id"]: m for m in web.get("/api/v1/models").get_json()["models"]}[OTHER]["shadow"]
        return shadow if shadow["compared"] == 6 else None
    shadow = wait_for(stats, 60, "the shadow model to compare 6 images")
    # The two models agree on nearly every valid photo; a disagreement would be a counted fact, not an error.
    assert shadow["share"] == 100 and 5 <= shadow["agreed"] <= 6
    assert shadow["agreement"] == round(shadow["agreed"] / 6, 4)
    metrics = web.get("/metrics").get_data(as_text=True)
    labels = '{model="%s",version="%s"}' % tuple(OTHER.split("@"))
    assert f"sportclf_shadow_images_compared_total{labels} 6.0" in metrics
    assert f"sportclf_shadow_images_agreed_total{labels} {float(shadow['agreed'])}" in metrics
    assert patch(web, {"shadow": None}).status_code == 200


def test_a_chunk_never_queued_goes_to_its_own_models_queue(stack):
    """The sweeper queues a chunk whose web process died on the queue of the model the job was routed to."""
    store = JobStore(Redis.from_url(stack.redis_url), 600, dispatch_grace_s=0)
    (path, _), = valid_images(1, start=7)
    store.create("swept-job", [path.name], {0: path.read_bytes()}, {}, [[0]], {"name": "sports100-lite0-int8",
                                                                              "version": "1.0.0"})
    job = wait_for(lambda: (j := store.get("swept-job")) and j.finished and j, 60, "the swept job to finish")
    assert job.images[0]["status"] == "done" and job.model == {"name": "sports100-lite0-int8", "version": "1.0.0"}


def test_ready_reports_each_model(web, stack):
    ready = web.get("/ready").get_json()
    assert ready["status"] == "ready"
    assert {m["id"]: (m["workers"], m["ready"]) for m in ready["models"]} == {SERVED: (1, True), OTHER: (1, True)}


def test_a_model_with_a_share_and_no_worker_is_not_ready(fresh_settings):
    """A database no worker serves: the canary's model, like the active one, has none."""
    client = create_app(fresh_settings(model_canary=f"{OTHER}:10")).test_client()
    response = client.get("/ready")
    assert response.status_code == 503
    models = {m["id"]: m for m in response.get_json()["models"]}
    assert models[OTHER] == {"id": OTHER, "share": 10, "workers": 0, "ready": False}
    assert any(OTHER in problem for problem in response.get_json()["problems"])


def test_a_ten_percent_canary_takes_20_of_200_jobs(fresh_settings):
    """Routing happens on submit: with no worker, the job records and the two queues show the split."""
    settings = fresh_settings(model_canary=f"{OTHER}:10", api_key=KEY["X-API-Key"], rate_limit="")
    client = create_app(settings).test_client()
    urls = [submit(client, 1, start=i % 20) for i in range(200)]
    counts = Counter(model_of(client.get(url).get_json()) for url in urls)
    assert counts == {SERVED: 180, OTHER: 20}
    redis = Redis.from_url(settings.redis_url)
    waiting = [redis.llen(backlog_key(queue_for(model))) for model in (SERVED, OTHER)]  # chunks listed to batch
    assert waiting == [180, 20]


def test_the_command_line_runs_a_rollout(stack, tmp_path):
    """`sportclf models ...` over HTTP, as an operator types it: canary, list, promote, back, shadow."""
    Redis.from_url(stack.redis_url).delete("models:routing")
    for url in serve(create_app(stack)):
        def run(*args, key: str = KEY["X-API-Key"]):  # `python -m sportclf`: this checkout's client
            return subprocess.run([sys.executable, "-m", "sportclf", "models", *args, "--server", url], cwd=REPO,
                                  env=os.environ | {"SPORTCLF_API_KEY": key}, capture_output=True, text=True,
                                  timeout=60)

        refused = run("canary", OTHER, "10", key="wrong")
        assert refused.returncode == 2 and "X-API-Key" in refused.stderr
        assert run("canary", OTHER, "10").stdout.strip() == f"active {SERVED}, canary {OTHER} 10% (from redis)"
        listed = run("list").stdout.splitlines()
        assert listed[0] == f"active {SERVED}, canary {OTHER} 10% (from redis)"
        assert any(line.startswith(OTHER) and "10% of jobs  1 worker(s)" in line for line in listed[1:]), listed
        assert run("promote").stdout.strip() == f"active {OTHER} (from redis)"
        assert run("canary", SERVED, "5").returncode == 0
        assert run("rollback").stdout.strip() == f"active {OTHER} (from redis)"
        assert run("promote", SERVED).stdout.strip() == f"active {SERVED} (from redis)"
        assert run("shadow", OTHER, "5").stdout.strip() == f"active {SERVED}, shadow {OTHER} 5% (from redis)"
        assert "agrees on 0 of 0" in run("list").stdout
        assert run("shadow", OTHER, "0").stdout.strip() == f"active {SERVED} (from redis)"


def test_a_model_only_a_worker_has_can_be_routed_to(stack, tmp_path):
    """A web host whose models/ lacks the OTHER model knows it from the card its worker published."""
    shipped = Path(Settings().model_path)
    for suffix in (".onnx", ".json"):
        (tmp_path / shipped.with_suffix(suffix).name).symlink_to(shipped.with_suffix(suffix))
    settings = dataclasses.replace(stack, model_path=str(tmp_path / shipped.name))
    assert set(registry(settings)) == {SERVED}
    client = create_app(settings).test_client()
    Redis.from_url(stack.redis_url).delete("models:routing")
    listed = {m["id"]: m for m in client.get("/api/v1/models").get_json()["models"]}
    assert listed[OTHER]["workers"] == 1
    assert listed[OTHER]["accuracy"] == registry(Settings())[OTHER].card["metrics"]["valid"]
    assert model_of(finished(client, submit(client, 1, query=f"?model={OTHER}"))) == OTHER
    assert patch(client, {"canary": {"model": OTHER, "share": 50}}).status_code == 200
    Redis.from_url(stack.redis_url).delete("models:routing")


def test_one_worker_can_serve_both_models(fresh_settings, tmp_path):
    settings = fresh_settings(api_key=KEY["X-API-Key"], worker_models=f"{OTHER},{SERVED}")
    worker = Worker(settings, tmp_path / "both.log").start()
    try:
        client = create_app(settings).test_client()
        listed = {m["id"]: m["workers"] for m in client.get("/api/v1/models").get_json()["models"]}
        assert (listed[SERVED], listed[OTHER]) == (1, 1)
        for model in (SERVED, OTHER):
            assert model_of(finished(client, submit(client, 2, query=f"?model={model}"))) == model
    finally:
        worker.stop()


def test_a_worker_told_to_serve_an_unknown_model_says_so_in_ready(fresh_settings, tmp_path):
    settings = fresh_settings(worker_models="nope@1")
    worker = Worker(settings, tmp_path / "unknown.log").start(wait_ready=False)
    try:
        redis = Redis.from_url(settings.redis_url)
        wait_for(lambda: workers.worker_problems(redis), 60, "the worker to report its problem")
        ready = create_app(dataclasses.replace(settings, worker_models="")).test_client().get("/ready")
        assert ready.status_code == 503
        assert "models not found" in " ".join(ready.get_json()["problems"])
    finally:
        worker.stop()
