"""The worker's Prometheus metrics and its per-chunk log line, and the port that serves them.

`init(app, settings)`, called by `create_worker`, has the worker's main process name the metrics
directory as it starts, before prometheus_client loads (common/exposition.py) and before the pool
forks, so the pool processes' values add up in the parent, whose thread serves them on
WORKER_METRICS_PORT once the pool has forked. The metrics
are prometheus_client's usual process-wide objects, made on first use (`_metrics`), never at
import: importing this module loads no prometheus_client. Recording is one call per batch
(`record_inference`) and one per chunk written (`record_chunk`).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime
from functools import cache
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

from celery import Celery, signals

from common import exposition, logs
from common.error_codes import ErrorCode
from common.jobs import DONE, Written
from common.settings import Settings

log = logging.getLogger(__name__)

# Failures that are not the image's decoding (so not counted in sportclf_decode_failures_total).
NOT_DECODING = {ErrorCode.WORKER_CRASHED, ErrorCode.INFERENCE_ERROR, ErrorCode.IMAGE_EXPIRED, ErrorCode.NOT_QUEUED}
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RESULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
MODEL = ["model", "version"]


@cache
def _metrics() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram  # here, once the directory is set (see above)
    return SimpleNamespace(
        jobs_finished=Counter("sportclf_jobs_finished", "Jobs whose last image reached a final status here"),
        finished=Counter("sportclf_images_finished", "Images that reached a final status, by outcome, error code "
                         "and the model that ran them", ["outcome", "code", *MODEL]),
        decode_failures=Counter("sportclf_decode_failures", "Images whose decoding failed, by error code", ["code"]),
        batch_size=Histogram("sportclf_inference_batch_size", "Images per inference run", MODEL, buckets=SIZE_BUCKETS),
        inference=Histogram("sportclf_inference_seconds", "Seconds one inference run takes", MODEL,
                            buckets=SECONDS_BUCKETS),
        top1=Histogram("sportclf_top1_confidence", "Calibrated top-1 confidence of each classified image", MODEL,
                       buckets=CONFIDENCE_BUCKETS),
        to_result=Histogram("sportclf_time_to_result_seconds", "Seconds from a job's submission to each of its "
                            "images' result", buckets=RESULT_BUCKETS),
    )


def record_inference(model: dict, batch_size: int, seconds: float) -> None:
    """One inference run of `batch_size` images by `model` ({"name", "version"})."""
    labels = {"model": model["name"], "version": model["version"]}
    _metrics().batch_size.labels(**labels).observe(batch_size)
    _metrics().inference.labels(**labels).observe(seconds)


def record_chunk(job_id: str, chunk: list[int], model: dict | None, results: dict[int, dict],
                 written: Written | None) -> None:
    """A chunk's results were written: counts them, and logs the chunk's line. `written` is what
    JobStore.finish answered: None when nothing new was written (a chunk run twice counts once)."""
    name, version = (model or {}).get("name", ""), (model or {}).get("version", "")
    if written is not None:
        _count(results, name, version, written)
    failed = sum(record["status"] != DONE for record in results.values())
    log.info("chunk written: %d done, %d failed%s", len(results) - failed, failed,
             "" if written else " (all written before: nothing new)",
             extra={"job_id": job_id, "chunk": chunk, "model": name, "version": version, **_duration()})


def _count(results: dict[int, dict], name: str, version: str, written: Written) -> None:
    m, waited = _metrics(), time.time() - _epoch(written.created_at)
    if written.job_finished:
        m.jobs_finished.inc()
    for record in results.values():
        code = (record.get("error") or {}).get("code", "")
        m.finished.labels(record["status"], code, name, version).inc()
        m.to_result.observe(waited)
        if record["status"] == DONE:
            m.top1.labels(name, version).observe(record["top3"][0]["confidence"])
        elif code not in NOT_DECODING:
            m.decode_failures.labels(code).inc()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


_task = threading.local()  # the task this pool process (or thread) runs: when it began, its log context


def _duration() -> dict:
    began = getattr(_task, "began", None)
    return {"duration_s": round(time.monotonic() - began, 4)} if began is not None else {}


def init(app: Celery, settings: Settings) -> None:
    """Metrics directory, endpoint and per-task log context for this worker; see the module's doc."""
    signals.worker_init.connect(lambda **_: _open_directory(app), weak=False)
    signals.worker_ready.connect(lambda **_: serve(settings), weak=False)
    signals.worker_process_shutdown.connect(lambda **_: exposition.forget_process(os.getpid()), weak=False)
    signals.worker_shutdown.connect(lambda **_: exposition.remove_own(app.metrics_directory), weak=False)
    signals.task_prerun.connect(_task_begins, weak=False)
    signals.task_postrun.connect(_task_ends, weak=False)


def _open_directory(app: Celery) -> None:
    """In the worker's main process, before its pool forks: only a worker (not `celery inspect`
    with the same app) makes or empties a metrics directory."""
    app.metrics_directory = exposition.use_directory("worker")


def _task_begins(task, args=(), **_) -> None:
    """Lines logged while a chunk's task runs carry its job, chunk and model (Celery's own too)."""
    fields = {}
    if len(args) == 2 and isinstance(args[0], str):  # (job_id, indices): worker.classify_images
        fields = {"job_id": args[0], "chunk": args[1]}
    runtime = getattr(getattr(task.app, "lifecycle", None), "current", None)
    if runtime is not None:
        fields |= {"model": runtime.classifier.identity["name"], "version": runtime.classifier.identity["version"]}
    _task.began, _task.log_context = time.monotonic(), logs.begin_job(**fields)


def batch_begins() -> None:
    """A task that drains the ready list takes a new batch: its chunks' lines time from here, not
    from when the task (which may have lingered) began."""
    if getattr(_task, "began", None) is not None:
        _task.began = time.monotonic()


def _task_ends(**_) -> None:
    if getattr(_task, "log_context", None) is not None:
        logs.end_job(_task.log_context)
    _task.began = _task.log_context = None


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # a scrape every few seconds is not news
        pass


def serve(settings: Settings) -> None:
    """Serves every pool process's metrics on HOST:WORKER_METRICS_PORT from a thread of the parent;
    a port in use (another worker on this host) costs the metrics, never the worker."""
    if not settings.worker_metrics_port:
        return
    _metrics()  # the series without labels show from the start, at 0
    from prometheus_client import REGISTRY, make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer
    app = _token_checked(make_wsgi_app(exposition.Scrape(REGISTRY)), settings.metrics_token)
    try:
        server = make_server(settings.host, settings.worker_metrics_port, app, ThreadingWSGIServer, _Quiet)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d: %s", settings.host, settings.worker_metrics_port, exc)
        return
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)


def _token_checked(metrics_app, token: str):
    """The WSGI app, answering 401 to a scrape without the token (METRICS_TOKEN) when one is set."""
    def app(environ, start_response):
        if exposition.authorized(environ.get("HTTP_AUTHORIZATION"), token):
            return metrics_app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
        return [b"a valid Authorization: Bearer <METRICS_TOKEN> header is required\n"]
    return app
