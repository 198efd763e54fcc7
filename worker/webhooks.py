"""Webhook delivery: the Celery task that POSTs a finished job's document to its callback_url.

It runs on the `webhooks` queue, which only a worker started for it consumes (`celery -A
worker.celery_app worker -Q webhooks -P threads`), so a slow receiver never holds a process that
classifies images. Each attempt checks the URL again (what its host resolves to may have changed
since submit) and connects to the address it checked, signs the body (common/webhooks.py), follows no redirect, and is bounded by
WEBHOOK_TIMEOUT_S; a failed one is retried after a doubling wait (`backoff_s`), up to
WEBHOOK_ATTEMPTS in all. The count lives in the job's `callback` record, not in the message, so
a redelivered task goes on where the last one stopped. Delivery is at least once: a receiver
should treat a second POST for the same job_id as the same event.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from celery import Celery, shared_task
from requests.adapters import HTTPAdapter
from redis import Redis

from common.documents import job_document
from common.jobs import Job, JobStore
from common.model_card import load_card, model_identity
from common.settings import Settings
from common.webhooks import (DELIVERED, FAILED, PENDING, SIGNATURE_HEADER, WEBHOOK_TASK, Callbacks, RefusedURL,
                             address_to_call, backoff_s, signature_header)

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """What a process that delivers callbacks holds: made on first use, hung off its Celery app."""
    settings: Settings
    jobs: JobStore
    callbacks: Callbacks
    served_model: dict

    @classmethod
    def for_app(cls, app: Celery) -> "Delivery":
        if getattr(app, "delivery", None) is None:
            settings = app.lifecycle.settings
            redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
            app.delivery = cls(settings, JobStore.for_settings(redis, settings), Callbacks(redis, app, settings),
                               model_identity(load_card(settings.model_card_path)))
        return app.delivery

    def attempt(self, job_id: str) -> float | None:
        """One attempt at the job's callback, recorded in the job. Returns the seconds to wait before
        the next one, or None when there is none to make (delivered, given up, or nothing to do)."""
        job = self.jobs.get(job_id)
        if job is None or job.callback is None or job.callback["status"] != PENDING:
            self.callbacks.end(job_id)
            return None
        error = self.post(job)
        attempts = job.callback["attempts"] + 1
        status = DELIVERED if error is None else FAILED if attempts >= self.settings.webhook_attempts else PENDING
        callback = job.callback | {"status": status, "attempts": attempts, "last_error": error}
        self.callbacks.record(job_id, callback, final=status != PENDING)
        log.info("job %s: callback attempt %d: %s", job_id, attempts, error or "delivered")
        return backoff_s(self.settings, attempts) if status == PENDING else None

    def post(self, job: Job) -> str | None:
        """POSTs the job's document, signed; what went wrong, or None if the receiver took it (2xx)."""
        url, secret = job.callback["url"], self.settings.webhook_secret
        if not secret:
            return "the worker has no WEBHOOK_SECRET to sign the callback with"
        try:
            address = address_to_call(url, bool(self.settings.webhook_allow_private))
        except RefusedURL as exc:
            return str(exc)
        return send(url, address, json.dumps(job_document(job, self.served_model)).encode(), secret,
                    self.settings.webhook_timeout_s)


def send(url: str, address: str | None, body: bytes, secret: str, timeout_s: float) -> str | None:
    """One signed POST of `body`, connecting to `address`; what went wrong, or None on a 2xx."""
    headers = {"Content-Type": "application/json", "User-Agent": "sportclf-webhook/1",
               SIGNATURE_HEADER: signature_header(secret, body)}
    try:
        with pinned_session(address) as session, session.post(url, data=body, headers=headers, timeout=timeout_s,
                                                              allow_redirects=False, stream=True) as response:
            # stream: the receiver's body is never read
            return None if 200 <= response.status_code < 300 else f"the receiver answered HTTP {response.status_code}"
    except requests.RequestException as exc:
        return f"{type(exc).__name__}: {exc}"[:500]


class PinnedAdapter(HTTPAdapter):
    """Connects to `address` rather than to what the URL's host resolves to now, while still
    speaking to that host by name: the Host header, TLS SNI and the certificate check use it."""

    def __init__(self, address: str):
        super().__init__(max_retries=0)
        self.address = address

    def add_headers(self, request, **kwargs) -> None:
        request.headers["Host"] = urlsplit(request.url).netloc.rpartition("@")[2]  # else the address's

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = pool_kwargs["assert_hostname"] = host_params["host"]
        return host_params | {"host": self.address}, pool_kwargs


def pinned_session(address: str | None) -> requests.Session:
    """A session for one attempt, connecting to `address` (None: by name), ignoring proxy settings
    of the environment (the URL checked must be the one called)."""
    session = requests.Session()
    session.trust_env = False
    if address is not None:
        session.mount("http://", PinnedAdapter(address))
        session.mount("https://", PinnedAdapter(address))
    return session


@shared_task(name=WEBHOOK_TASK, bind=True, max_retries=None)
def deliver_callback(self, job_id: str) -> None:
    wait_s = Delivery.for_app(self.app).attempt(job_id)
    if wait_s is not None:
        raise self.retry(countdown=wait_s)
