"""Liveness and readiness, for operators, load balancers and `docker compose` health checks."""
from __future__ import annotations

from apiflask import APIBlueprint
from flask import current_app
from redis.exceptions import RedisError

from common import workers
from common.routing import Routing
from webapp import examples, metrics, schemas
from webapp.models import current

bp = APIBlueprint("status", __name__, tag="Operations")


@bp.get("/health")
@bp.output(schemas.HealthOut, example=examples.HEALTH)
@bp.doc(summary="The web process is up")
def health():
    return {"status": "ok"}


@bp.get("/ready")
@bp.output(schemas.ReadyOut, description="Redis is reachable and every model that takes jobs has a worker",
           example=examples.READY)
@bp.doc(summary="Ready to classify", responses={503: {  # not ready: the same document, not an error
    "description": "Redis unreachable, no worker with a model, or a model that takes jobs has no worker",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReadyOut"},
                                     "example": examples.NOT_READY}}}})
def ready():
    redis = current_app.extensions["redis"]
    try:
        redis.ping()
        alive = workers.ready_workers(redis)
        problems = [public_problem(p["problem"]) for p in workers.worker_problems(redis)]
        models = per_model(current(), workers.serving(redis))
    except RedisError as exc:
        body = {"status": "not_ready", "redis": f"unreachable: {type(exc).__name__}", "workers": 0, "model": None, "problems": []}
        return body, 503
    if not alive and not problems:
        problems = ["no worker has announced a loaded model yet"]
    unserved = [m for m in models if not m["ready"]]
    problems += [f"model {m['id']} takes {m['share']:g}% of jobs and no worker serves it" for m in unserved]
    ok = bool(alive) and not unserved
    body = {"status": "ready" if ok else "not_ready", "redis": "ok", "workers": len(alive),
            "model": alive[0]["model"] if alive else None, "models": models, "problems": problems}
    return body, 200 if ok else 503


def per_model(now: Routing, serving: dict[str, int]) -> list[dict]:
    """Each model that takes jobs or has workers: ready unless it takes jobs that no worker serves."""
    shares = now.shares()
    return [{"id": model, "share": shares.get(model, 0.0), "workers": serving.get(model, 0),
             "ready": serving.get(model, 0) > 0 or not shares.get(model)}
            for model in dict.fromkeys([*shares, *sorted(serving)])]


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
