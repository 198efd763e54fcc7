"""Liveness and readiness, for operators, load balancers and `docker compose` health checks."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import current_app
from redis.exceptions import RedisError

from common import workers
from webapp import examples, metrics, schemas

bp = APIBlueprint("status", __name__, tag="Operations")


@bp.get("/health")
@bp.output(schemas.HealthOut, example=examples.HEALTH)
@bp.doc(summary="The web process is up")
def health():
    return {"status": "ok"}


@bp.get("/ready")
@bp.output(schemas.ReadyOut, description="Redis is reachable and a worker has the model loaded", example=examples.READY)
@bp.doc(summary="Ready to classify", responses={503: {  # not ready: the same document, not an error
    "description": "Redis unreachable or no worker with a model",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReadyOut"},
                                     "example": examples.NOT_READY}}}})
def ready():
    redis = current_app.extensions["redis"]
    try:
        redis.ping()
        alive = workers.ready_workers(redis)
        problems = [public_problem(p["problem"]) for p in workers.worker_problems(redis)]
    except RedisError as exc:
        body = {"status": "not_ready", "redis": f"unreachable: {type(exc).__name__}", "workers": 0, "model": None, "problems": []}
        return body, 503
    body = {"status": "ready" if alive else "not_ready", "redis": "ok", "workers": len(alive),
            "model": alive[0]["model"] if alive else None, "problems": problems}
    if not alive and not problems:
        body["problems"] = ["no worker has announced a loaded model yet"]
    return body, 200 if alive else 503


def public_problem(problem: str) -> str:
    """What went wrong, without the details after the first colon (an exception's text, which can
    name files and folders on the worker's host); the worker's log has them in full."""
    return f"{problem.split(':', 1)[0]} (details in the worker's log)"


@bp.get("/metrics")
@bp.doc(summary="Prometheus metrics", description="The service's metrics in Prometheus's text format (README, "
        "\"Operating it\"). Open like /health, unless `METRICS_TOKEN` is set: then it needs "
        "`Authorization: Bearer <token>`.", responses={200: {
            "description": "every web process's metrics, and the queue and workers as Redis has them",
            "content": {"text/plain": {"schema": {"type": "string"}, "example": examples.METRICS}}}})
def get_metrics():
    return metrics.scrape()
