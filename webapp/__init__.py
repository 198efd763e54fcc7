"""The web app: accepts uploads, records jobs in Redis, queues work, answers status.

It never imports onnxruntime or the worker's code: it talks to workers only through Redis.
"""
from __future__ import annotations

from apiflask import APIFlask
from flask_cors import CORS
from redis import Redis

from common.jobs import JobStore
from common.model_card import load_card
from common.queue import make_celery
from common.settings import REPO, Settings
from common.webhooks import Callbacks
from webapp import api, errors, guards, legacy, metrics, models, openapi, pages, status

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None) -> APIFlask:
    settings = settings or Settings.from_env()
    app = APIFlask(__name__, title="Sport Image Classifier", version=API_VERSION,
                   docs_path="/docs", spec_path="/openapi.json",
                   static_folder=str(REPO / "frontend"), static_url_path="/static")
    configure(app, settings)
    connect_services(app, settings)
    guards.init_app(app)
    models.init_app(app)
    metrics.init_app(app)
    register_blueprints(app)
    errors.register(app)
    openapi.register(app, settings)
    return app


def configure(app: APIFlask, settings: Settings) -> None:
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes  # werkzeug answers 413 past it
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_request_bytes
    app.config["JSON_SORT_KEYS"] = False
    app.config["INFO"] = {"description": api.DESCRIPTION.format(s=settings)}
    pages.use_local_docs_assets(app)
    if settings.cors_origins:
        CORS(app, origins=settings.cors_origins.split(","), expose_headers=["Location", "Retry-After"])


def connect_services(app: APIFlask, settings: Settings) -> None:
    # Timeouts: a Redis that stops answering (a partition, a failover) must cost a request a 503,
    # not hold its thread forever; long polls wait on their own timeout, not the socket's.
    # Pool: every connection being served may wait in a long poll, which reads with a connection of
    # its own (the subscription is one per process, shared: common/notify.py); with fewer, polls
    # beyond the pool would fail.
    redis = Redis.from_url(settings.redis_url, health_check_interval=30, socket_connect_timeout=5, socket_timeout=10,
                           max_connections=2 * settings.web_connections)
    app.extensions["settings"] = settings
    app.extensions["redis"] = redis
    app.extensions["jobs"] = JobStore.for_settings(redis, settings, shared_subscription=True)
    app.extensions["celery"] = make_celery(settings)
    # A cancel that closes a job with a callback_url queues its delivery (common/webhooks.py).
    app.extensions["jobs"].on_callback_due = Callbacks(redis, app.extensions["celery"], settings).queue
    app.extensions["model_card"] = load_card(settings.model_card_path)


def register_blueprints(app: APIFlask) -> None:
    for module in (api, models, legacy, status, pages):
        app.register_blueprint(module.bp)
