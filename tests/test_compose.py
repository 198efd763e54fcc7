"""The Docker files, checked without a Docker engine: docker-compose.yml against the compose schema
(check-jsonschema's vendored copy, so offline), exact image tags, restart policies, Redis's data
settings, and the worker image's health check run for real against a worker. The monitoring
profile's files too: Prometheus's config (promtool, and its targets against the compose services),
Grafana's provisioning, and the dashboard's PromQL (parsed) against the service's metric names."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import promql_parser
import pytest
import yaml
from redis import Redis

from common import workers
from common.settings import REPO, Settings
from harness import RedisServer, wait_for

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILES = sorted(REPO.glob("Dockerfile.*"))
EXACT_TAG = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+(-[\w.-]+)?$")  # e.g. python:3.11.14-slim-bookworm
DEPLOY = REPO / "deploy"
MONITORING = {"prometheus", "grafana", "flower"}
# The service's metrics as agreed for issue 12 (webapp/metrics.py and worker/metrics.py make them):
# name{labels}; a histogram (HISTOGRAMS) is named without its _bucket, _sum and _count series.
AGREED_METRICS = """
sportclf_http_requests_total{route,method,status}, sportclf_http_request_duration_seconds{route},
sportclf_jobs_submitted_total, sportclf_images_submitted_total,
sportclf_images_finished_total{outcome,code,model,version}, sportclf_queue_depth{queue}, sportclf_pending_chunks,
sportclf_time_to_result_seconds, sportclf_inference_batch_size{model,version},
sportclf_inference_seconds{model,version},
sportclf_decode_failures_total{code}, sportclf_top1_confidence{model,version},
sportclf_worker_heartbeat_age_seconds{worker},
sportclf_shadow_images_compared_total{model,version}, sportclf_shadow_images_agreed_total{model,version}
"""
HISTOGRAMS = {"sportclf_http_request_duration_seconds", "sportclf_time_to_result_seconds",
              "sportclf_inference_batch_size", "sportclf_inference_seconds", "sportclf_top1_confidence"}


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


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


def mounts(service: dict) -> dict[str, Path]:
    """A service's bind mounts from this checkout: path in the container -> file or folder here."""
    binds = [volume.split(":") for volume in service.get("volumes", []) if volume.startswith("./")]
    return {target: REPO / source for source, target, *_ in binds}


def test_the_monitoring_profile_adds_prometheus_grafana_and_flower_and_nothing_else():
    profiled = {name for name, s in services().items() if "profiles" in s}
    assert profiled == MONITORING
    assert all(services()[name]["profiles"] == ["monitoring"] for name in MONITORING)
    for name in MONITORING:
        assert services()[name]["healthcheck"]["test"]
        # Published on the host's loopback unless HOST opens them, as the web app is.
        assert all(port.startswith("${HOST:-127.0.0.1}:") for port in services()[name]["ports"])


def test_every_file_the_compose_file_mounts_is_in_the_checkout():
    binds = {target: path for s in services().values() for target, path in mounts(s).items()}
    assert binds  # the monitoring profile's configuration
    assert [str(path) for path in binds.values() if not path.exists()] == []


def test_workers_scale_and_serve_their_metrics_inside_the_compose_network():
    """No host port on a worker (so `--scale worker=3` cannot clash), and every container listens
    beyond its own loopback, or nothing on the compose network reaches it."""
    worker, web = services()["worker"], services()["web"]
    assert "ports" not in worker
    assert worker["environment"]["HOST"] == web["environment"]["HOST"] == "0.0.0.0"
    assert worker["expose"] == [str(worker["environment"]["WORKER_METRICS_PORT"])]


def container_ports(name: str) -> set[int]:
    """The ports a compose service listens on inside its network: published, exposed, or its metrics."""
    service = services()[name]
    ports = {int(str(port).rsplit(":", 1)[-1]) for port in service.get("ports", []) + service.get("expose", [])}
    return ports | {int(service.get("environment", {}).get("WORKER_METRICS_PORT", 0))} - {0}


def prometheus_config() -> dict:
    [(target, path)] = [(t, p) for t, p in mounts(services()["prometheus"]).items() if p.suffix == ".yml"]
    assert f"--config.file={target}" in services()["prometheus"]["command"]
    return load_yaml(path)


def test_prometheus_scrapes_the_web_app_and_every_worker_by_their_service_names():
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    assert jobs.keys() == {"web", "worker"}
    scraped = set()
    for job in jobs.values():
        [discovery] = job["dns_sd_configs"]  # every replica the services' names resolve to
        assert discovery["type"] == "A" and job["metrics_path"] == "/metrics"
        assert all(discovery["port"] in container_ports(name) for name in discovery["names"])
        scraped |= set(discovery["names"])
    assert jobs["web"]["dns_sd_configs"][0] == {**jobs["web"]["dns_sd_configs"][0], "names": ["web"], "port": 8000}
    metered = {name for name, service in services().items()
               if isinstance(env := service.get("environment", {}), dict) and env.get("WORKER_METRICS_PORT")}
    assert scraped == {"web"} | metered  # the light and the heavy-image workers alike


def test_prometheus_accepts_its_config():
    promtool = shutil.which("promtool", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if not promtool:
        pytest.skip("promtool is missing: `make test` takes it from Debian's prometheus package into .venv/bin")
    check = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def grafana_provisioning() -> tuple[dict[str, Path], Path]:
    binds = mounts(services()["grafana"])
    return binds, binds["/etc/grafana/provisioning"]


def test_grafana_gets_the_compose_prometheus_and_the_dashboards_folder():
    binds, provisioning = grafana_provisioning()
    [source] = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in services() and int(port) in container_ports(host)
    [provider] = load_yaml(provisioning / "dashboards" / "sportclf.yml")["providers"]
    folder = binds[provider["options"]["path"]]  # the folder the provider reads is mounted from here
    assert sorted(path.name for path in folder.glob("*.json")) == ["sportclf.json"]


def agreed_metrics() -> dict[str, set[str]]:
    """Each series name the service exposes -> its labels (a histogram's _bucket has `le` too)."""
    series = {}
    for name, labels in re.findall(r"(sportclf_\w+)(?:\{([\w,]*)\})?", AGREED_METRICS):
        series[name] = set(filter(None, labels.split(",")))
        if name in HISTOGRAMS:
            series |= {f"{name}_sum": series[name], f"{name}_count": series[name],
                       f"{name}_bucket": series[name] | {"le"}}
    return series


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names a query selects and the labels it groups by, from the parsed query
    (Grafana's own variables replaced by a duration first)."""
    tree = promql_parser.parse(re.sub(r"\$__(rate_interval|interval|range)", "5m", expr))
    names, grouped = set(), set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouped.update(node.modifier.labels)
    promql_parser.walk(tree, visit)
    return names, grouped


def test_the_dashboard_queries_only_the_service_metrics_and_shows_them_all():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sportclf.json").read_text())
    series, used = agreed_metrics(), set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names, grouped = promql_names(target["expr"])
            assert names and names <= series.keys(), (panel["title"], names - series.keys())
            assert grouped <= set.union(*(series[name] for name in names)), (panel["title"], grouped)
            assert target["datasource"]["uid"] == "prometheus"
            used |= names
    base = {re.sub(r"_(sum|count|bucket)$", "", name) for name in used}
    assert base == {name for name in series if not re.search(r"_(sum|count|bucket)$", name)}
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("throughput", "latency", "p95", "queue", "pending", "outcome", "model", "confidence", "heartbeat"):
        assert topic in titles


def test_the_dashboard_panels_fit_grafanas_grid_without_overlapping():
    panels = json.loads((DEPLOY / "grafana" / "dashboards" / "sportclf.json").read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = [(panel["gridPos"]["x"] + dx, panel["gridPos"]["y"] + dy) for panel in panels
             for dx in range(panel["gridPos"]["w"]) for dy in range(panel["gridPos"]["h"])]
    assert len(set(cells)) == len(cells)  # no two panels share a cell
    assert all(0 <= x < 24 for x, _ in cells)  # Grafana's grid is 24 columns wide
