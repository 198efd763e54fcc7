"""The models this service can route to (common/registry.py), the routing in force
(common/routing.py), and the operators' view of both: GET /api/v1/models and, with the API key,
PATCH /api/v1/models/routing, which changes the routing for every web process at once."""
from __future__ import annotations

import random
import time
from dataclasses import replace

from apiflask import APIBlueprint, APIFlask
from flask import current_app, g
from redis import Redis

from common import routing, shadow, workers
from common.error_codes import ErrorCode
from common.registry import ModelEntry, entry, published, registry
from common.routing import Routing, Split
from webapp import examples, schemas
from webapp.errors import fail
from webapp.guards import admin, remember_routing
from webapp.openapi import errors

bp = APIBlueprint("models", __name__, url_prefix="/api/v1", tag="Models")
ROUTING_FRESH_S = 1.0


def init_app(app: APIFlask) -> None:
    """Reads the registry and the settings' routing; a routing naming an unknown model stops here."""
    settings = app.extensions["settings"]
    models = registry(settings)
    initial = routing.from_settings(settings, entry(settings.model_path).id)
    for model in routing_models(initial):
        if model not in models:
            raise ValueError(f"the routing names {model}, not in the registry {sorted(models)}")
    app.extensions["models"], app.extensions["routing"] = models, initial
    app.extensions["random"] = random.Random()


def routing_models(r: Routing) -> list[str]:
    return [r.active] + [split.model for split in (r.canary, r.shadow) if split]


def current() -> Routing:
    """The routing in force now, read from Redis (so a change reaches every web process at once):
    a submission's guard reads it with the backlog, in the same round trip, and it is read again
    here only if that reading is older than ROUTING_FRESH_S (an upload that took its time)."""
    if "routing" not in g or time.monotonic() - g.routing_read_at > ROUTING_FRESH_S:
        return remember_routing(current_app.extensions["redis"].hgetall(routing.KEY))
    return g.routing


def all_models() -> dict[str, ModelEntry]:
    """This host's registry, and the models only workers have (published with their cards)."""
    return published(current_app.extensions["redis"]) | current_app.extensions["models"]


def known(model: str) -> ModelEntry:
    """The model with this id: this host's, else one a worker published; a 422 listing them if none."""
    found = current_app.extensions["models"].get(model) or published(current_app.extensions["redis"], model).get(model)
    if found is None:
        fail(ErrorCode.UNKNOWN_MODEL, f"no model {model!r}; this service has {sorted(all_models())}")
    return found


def route(pinned: str | None) -> tuple[ModelEntry, str | None]:
    """The model for a new job (`pinned`, else the routing's weighted choice) and the shadow model
    that also classifies it, if this job is in the shadow's sample."""
    now = current()
    if pinned:  # a pinned job takes no number: the canary's share is of the jobs routed
        model = known(pinned)
    else:
        model = known(now.choose(routing.number_job(current_app.extensions["redis"])) if now.canary else now.active)
    return model, now.shadow_for(model.id, current_app.extensions["random"])


def describe(model: ModelEntry, now: Routing, redis: Redis, serving: dict[str, int]) -> dict:
    card, metrics = model.card, model.card.get("metrics", {})
    watched = now.shadow if now.shadow and now.shadow.model == model.id else None
    return {"id": model.id, **model.identity, "architecture": card.get("architecture"),
            "precision": card.get("precision"), "accuracy": metrics.get("valid"),
            "real_world_accuracy": metrics.get("wild-dev"), "share": now.shares().get(model.id, 0.0),
            "workers": serving.get(model.id, 0),
            "shadow": {"share": watched.share, **shadow.agreement(redis, model.id)} if watched else None}


def routing_document(now: Routing) -> dict:
    return {"active": now.active, "canary": split_document(now.canary), "shadow": split_document(now.shadow),
            "source": now.source}


def split_document(split: Split | None) -> dict | None:
    return {"model": split.model, "share": split.share} if split else None


@bp.get("/models")
@bp.output(schemas.ModelsOut, example=examples.MODELS)
@bp.doc(summary="Every model the service has, its share of jobs and the workers that serve it",
        responses=errors(ErrorCode.UNAVAILABLE))
def list_models():
    redis, now = current_app.extensions["redis"], current()
    serving = workers.serving(redis)
    models = [describe(m, now, redis, serving) for _, m in sorted(all_models().items())]
    return {"routing": routing_document(now), "models": models}


@bp.patch("/models/routing")
@admin  # before the body is read
@bp.input(schemas.RoutingIn, example=examples.ROUTING_CANARY)
@bp.output(schemas.RoutingChanged, example=examples.ROUTING)
@bp.doc(summary="Change which models take the jobs (canary, promote, roll back, shadow)",
        description="Fields left out keep their value; `null` removes a canary or shadow. Takes effect for the "
                    "next job on every web process, with no restart. Needs the API key.",
        responses=errors(ErrorCode.UNAUTHORIZED, ErrorCode.ROUTING_LOCKED, ErrorCode.BAD_REQUEST,
                         ErrorCode.UNKNOWN_MODEL, ErrorCode.UNPROCESSABLE_ENTITY, ErrorCode.UNAVAILABLE))
def change_routing(json_data):
    now = current()
    changes = {name: Split(**value) if value else None for name, value in json_data.items() if name != "active"}
    new = replace(now, active=json_data.get("active", now.active), **changes)
    for model in routing_models(new):
        known(model)
    redis = current_app.extensions["redis"]
    if "shadow" in json_data and new.shadow:
        shadow.reset(redis, new.shadow.model)
    return routing_document(routing.save(redis, new))
