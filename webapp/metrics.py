"""The web app's Prometheus metrics, served at GET /metrics: its requests, the jobs and images it
accepted, and the service's state read from Redis as each scrape asks (queue depth, pending
chunks, worker heartbeats). Under gunicorn every worker process's counts add up (multiprocess
mode, set up by webapp/gunicorn_conf.py); elsewhere (tests, `flask run`) they are the process's.

/metrics needs no API key and no rate limit applies to it: the key guards submitting work, and
Prometheus is no client. Like /health it is open unless METRICS_TOKEN is set, when a scrape must
send `Authorization: Bearer <token>` (or keep the port private, as `make run` does by default).

Importing this module (the webapp package does) loads no prometheus_client: gunicorn's
configuration imports from the package, and prometheus_client must first load after it has named
the metrics directory (common/exposition.py). The app's factory loads it (`WebMetrics`).
"""
from __future__ import annotations

import logging
import time

from apiflask import APIFlask
from flask import Response, current_app, g, request
from redis import Redis
from redis.exceptions import RedisError

from common import exposition, shadow, workers
from common.chunks import PENDING
from common.error_codes import ErrorCode
from common.jobs import CANCELLED, FAILED
from common.queue import CELERY_QUEUE, backlog_key
from webapp.errors import fail

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BINDINGS = "_kombu.binding.*"  # kombu's record of each exchange's queues: finds every task queue (heavy, per model)


class WebMetrics:
    """One app's metrics, in a registry of its own (so apps in one test process keep apart)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram  # see the module's doc
        self.registry = r = CollectorRegistry()
        self.requests = Counter("sportclf_http_requests", "HTTP requests answered, by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("sportclf_http_request_duration_seconds", "Seconds to answer a request, by route "
                                 "(long polls included)", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.jobs = Counter("sportclf_jobs_submitted", "Jobs accepted", registry=r)
        self.jobs_finished = Counter("sportclf_jobs_finished", "Jobs finished here: every image refused on arrival, "
                                     "or the rest cancelled", registry=r)
        self.images = Counter("sportclf_images_submitted", "Images in accepted jobs", registry=r)
        self.finished = Counter("sportclf_images_finished", "Images that reached a final status here: failed on "
                                "arrival, or cancelled", ["outcome", "code", "model", "version"], registry=r)
        self.decode_failures = Counter("sportclf_decode_failures", "Images whose header could not be read on arrival, "
                                       "by error code", ["code"], registry=r)


class ServiceState:
    """Read from Redis at scrape time: a gauge of the whole service, whichever process answers."""

    def __init__(self, redis: Redis):
        self.redis = redis

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily as Gauge  # see the module's doc
        up = Gauge("sportclf_redis_up", "1 if this scrape could read Redis, else 0")
        try:
            families = [self._queues(Gauge), self._pending(Gauge), self._heartbeats(Gauge), *self._shadows()]
        except RedisError as exc:
            log.warning("metrics: Redis unreadable: %s", exc)
            families = []
        up.add_metric([], 1 if families else 0)
        return [up, *families]

    def _queues(self, Gauge):
        depth = Gauge("sportclf_queue_depth", "Work waiting in each queue: chunks listed to batch, or tasks",
                      labels=["queue"])
        queues = {CELERY_QUEUE}
        for key in self.redis.scan_iter(match=BINDINGS, count=100):
            if b"pidbox" not in key:  # Celery's control channels (`celery inspect` replies), not work
                queues |= {member.split(b"\x06\x16")[-1].decode() for member in self.redis.smembers(key)}
        for queue in sorted(queues):
            depth.add_metric([queue], self.redis.llen(backlog_key(queue)))
        return depth

    def _pending(self, Gauge):
        return Gauge("sportclf_pending_chunks", "Chunks accepted and not yet written (queued or running)",
                                 value=self.redis.zcard(PENDING))

    def _heartbeats(self, Gauge):
        age = Gauge("sportclf_worker_heartbeat_age_seconds", "Seconds since each ready worker process "
                                f"last announced itself (it drops out at {workers.TTL_S})", labels=["worker"])
        for key in self.redis.scan_iter(match=workers.PREFIX + "*", count=1000):
            left_ms = self.redis.pttl(key)
            if left_ms > 0:
                age.add_metric([key.decode().removeprefix(workers.PREFIX)], workers.TTL_S - left_ms / 1000)
        return age

    def _shadows(self):
        """Images each shadow model classified beside a job's own model, and how many it agreed on
        (same top-1): their ratio is what to read before a promotion. Counted anew when a shadow is set."""
        from prometheus_client.core import CounterMetricFamily as Counter  # see the module's doc
        labels = ["model", "version"]
        compared = Counter("sportclf_shadow_images_compared", "Images a shadow model classified too", labels=labels)
        agreed = Counter("sportclf_shadow_images_agreed", "Of those, images whose top-1 was the same", labels=labels)
        for model_id, counts in shadow.agreements(self.redis).items():
            compared.add_metric(model_id.split("@", 1), counts["compared"])
            agreed.add_metric(model_id.split("@", 1), counts["agreed"])
        return [compared, agreed]


def init_app(app: APIFlask) -> None:
    app.extensions["metrics"] = WebMetrics()
    app.before_request(_started)
    app.after_request(_answered)


def _started() -> None:
    g.metrics_started = time.perf_counter()


def _answered(response: Response) -> Response:
    metrics, route = current_app.extensions["metrics"], request.url_rule.rule if request.url_rule else "unmatched"
    metrics.requests.labels(route, request.method, str(response.status_code)).inc()
    if "metrics_started" in g:
        metrics.latency.labels(route).observe(time.perf_counter() - g.metrics_started)
    return response


def record_submitted(job) -> None:
    """A job was accepted (`job`: webapp.uploads.NewJob); its images refused on arrival are final now."""
    metrics = current_app.extensions["metrics"]
    metrics.jobs.inc()
    metrics.images.inc(len(job.filenames))
    for record in job.failures.values():
        metrics.finished.labels(FAILED, record["error"]["code"], "", "").inc()
        metrics.decode_failures.labels(record["error"]["code"]).inc()
    if len(job.failures) == len(job.filenames):
        metrics.jobs_finished.inc()
    log.info("job accepted: %d images, %d refused on arrival", len(job.filenames), len(job.failures),
             extra={"job_id": job.job_id})


def record_cancelled(before, after) -> None:
    """A DELETE cancelled the images that were queued in `before` and are cancelled in `after` (Jobs)."""
    if before is None or after is None:
        return
    newly = sum(a["status"] == CANCELLED != b["status"] for a, b in zip(after.images, before.images))
    if not newly:
        return
    metrics, model = current_app.extensions["metrics"], after.model or {}
    metrics.finished.labels(CANCELLED, "", model.get("name", ""), model.get("version", "")).inc(newly)
    if after.finished and not before.finished:
        metrics.jobs_finished.inc()
    log.info("job cancelled: %d images", newly, extra={"job_id": after.job_id})


def scrape() -> Response:
    """GET /metrics (webapp/status.py): this app's metrics, or every gunicorn process's, and Redis's state."""
    settings = current_app.extensions["settings"]
    if not exposition.authorized(request.headers.get("Authorization"), settings.metrics_token):
        fail(ErrorCode.UNAUTHORIZED, "a valid Authorization: Bearer <METRICS_TOKEN> header is required",
             headers={"WWW-Authenticate": "Bearer"})
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # see the module's doc
    source = exposition.Scrape(current_app.extensions["metrics"].registry, ServiceState(current_app.extensions["redis"]))
    return Response(generate_latest(source), content_type=CONTENT_TYPE_LATEST)
