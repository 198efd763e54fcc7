"""Webhooks, end to end with real parts: the web app, the session's Celery worker (which closes the
job and queues the delivery), a webhook worker on its own queue, and a local HTTP receiver that
checks the signature as README's snippet does."""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from redis import Redis

from common.jobs import JobStore, failure, success
from common.queue import make_celery
from common.webhooks import PENDING_CALLBACKS, SIGNATURE_HEADER, Callbacks, backoff_s
from harness import WebhookWorker, valid_images, wait_for
from webapp import create_app
from worker.webhooks import Delivery, pinned_session

SECRET = "test-webhook-secret"
ATTEMPTS = 3


def verify(secret: str, header: str, body: bytes, tolerance_s: float = 300) -> bool:
    """What a receiver does (README's snippet): recompute the HMAC over "<t>.<body>", compare in
    constant time, and refuse an old timestamp."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) <= tolerance_s


class Receiver:
    """A local HTTP server that records every POST and answers with the next planned status
    (200 once the plan runs out; a 3xx points elsewhere on it)."""

    def __init__(self, plan: list[int] = ()):
        self.plan, self.calls, self.paths = list(plan), [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                receiver.paths.append(self.path)
                status = receiver.plan.pop(0) if receiver.plan else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def use_tls(self, directory, name: str) -> None:
        """Serves HTTPS with a fresh self-signed certificate for `name` (its file: self.cert)."""
        self.cert, key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                        "-addext", f"subjectAltName=DNS:{name}", "-keyout", key, "-out", self.cert],
                       check=True, capture_output=True)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook_settings(settings):
    """The session's Redis and worker, with webhooks on and quick retries for the local receiver."""
    return dataclasses.replace(settings, webhook_secret=SECRET, webhook_allow_private=1, webhook_backoff_s=0.2,
                               webhook_attempts=ATTEMPTS, webhook_timeout_s=5.0)


@pytest.fixture(scope="module")
def webhook_worker(hook_settings, worker, tmp_path_factory):
    process = WebhookWorker(hook_settings, tmp_path_factory.mktemp("logs") / "webhooks.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def hook_client(hook_settings, webhook_worker):
    return create_app(hook_settings).test_client()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def submit(client, count: int, callback_url: str):
    files = [(io.BytesIO(path.read_bytes()), path.name) for path, _ in valid_images(count)]
    response = client.post("/api/v1/jobs", data={"file": files, "callback_url": callback_url},
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def settled_callback(client, status_url: str) -> dict:
    """The job once its callback is no longer pending (delivered or failed)."""
    def settled():
        job = client.get(status_url).get_json()
        return job if job["callback"]["status"] != "pending" else None
    return wait_for(settled, 60, "the callback to be delivered or given up")


def test_the_job_document_arrives_signed(hook_client, receiver, hook_settings):
    accepted = submit(hook_client, 2, receiver.url)
    job = settled_callback(hook_client, accepted["status_url"])
    assert job["status"] == "done"
    assert job["callback"] == {"url": receiver.url, "status": "delivered", "attempts": 1, "last_error": None}
    (headers, body), = receiver.calls
    assert headers["Content-Type"] == "application/json"
    assert verify(SECRET, headers[SIGNATURE_HEADER], body)
    assert not verify("another-secret", headers[SIGNATURE_HEADER], body)
    sent = json.loads(body)
    # The body is the job document as GET answers it, with the callback as it stood before this POST.
    assert sent["callback"] == {"url": receiver.url, "status": "pending", "attempts": 0, "last_error": None}
    assert {**sent, "callback": job["callback"]} == job
    assert Redis.from_url(hook_settings.redis_url).zscore(PENDING_CALLBACKS, accepted["job_id"]) is None


def test_a_failing_receiver_is_retried_until_it_answers(hook_client):
    receiver = Receiver(plan=[500, 503])
    try:
        accepted = submit(hook_client, 1, receiver.url)
        job = settled_callback(hook_client, accepted["status_url"])
    finally:
        receiver.close()
    assert job["callback"] == {"url": receiver.url, "status": "delivered", "attempts": 3, "last_error": None}
    assert len(receiver.calls) == 3
    assert all(verify(SECRET, headers[SIGNATURE_HEADER], body) for headers, body in receiver.calls)


def test_a_redirect_is_not_followed(hook_client):
    receiver = Receiver(plan=[307])
    try:
        accepted = submit(hook_client, 1, receiver.url)
        job = settled_callback(hook_client, accepted["status_url"])
    finally:
        receiver.close()
    assert job["callback"]["status"] == "delivered" and job["callback"]["attempts"] == 2
    assert receiver.paths == ["/hook", "/hook"]


def test_a_receiver_that_never_answers_2xx_is_given_up_on(hook_client):
    receiver = Receiver(plan=[500] * 10)
    try:
        accepted = submit(hook_client, 1, receiver.url)
        job = settled_callback(hook_client, accepted["status_url"])
    finally:
        receiver.close()
    assert job["callback"]["status"] == "failed" and job["callback"]["attempts"] == ATTEMPTS
    assert "HTTP 500" in job["callback"]["last_error"]
    assert len(receiver.calls) == ATTEMPTS


def test_a_job_refused_whole_on_arrival_still_calls_back(hook_client, receiver):
    response = hook_client.post("/api/v1/jobs", data={"file": [(io.BytesIO(b"not an image"), "notes.txt")],
                                                      "callback_url": receiver.url},
                                content_type="multipart/form-data")
    job = settled_callback(hook_client, response.get_json()["status_url"])
    assert job["callback"]["status"] == "delivered"
    assert json.loads(receiver.calls[0][1])["results"][0]["error"]["code"] == "not_an_image"


def test_a_callback_whose_worker_died_before_queueing_it_is_swept(hook_settings, hook_client, receiver):
    """A worker that writes the last result and dies before sending the task leaves the job in the
    pending set (written by the same script): a sweeper in the running worker queues it."""
    redis = Redis.from_url(hook_settings.redis_url)
    store = JobStore.for_settings(redis, hook_settings)  # no on_callback_due: queues nothing, like that worker
    job_id = "7d0e6f4a-1b2c-4d3e-8f90-a1b2c3d4e5f6"
    store.create(job_id, ["a.jpg"], {0: b"x"}, {}, callback_url=receiver.url)
    assert redis.zscore(PENDING_CALLBACKS, job_id) is None  # not due before the job is done
    prediction = {"top3": [{"label": "surfing", "display_name": "Surfing", "confidence": 0.9}] * 3, "confident": True}
    store.finish(job_id, {0: success(prediction)})
    assert redis.zscore(PENDING_CALLBACKS, job_id) is not None
    redis.zadd(PENDING_CALLBACKS, {job_id: 0})  # its grace has run out
    job = settled_callback(hook_client, f"/api/v1/jobs/{job_id}")
    assert job["callback"]["status"] == "delivered" and len(receiver.calls) == 1


@pytest.mark.parametrize("url, allow_private, problem", [
    ("http://127.0.0.1:9/hook", 0, "not a public address"),
    ("http://localhost/hook", 0, "not a public address"),
    ("http://[::1]/hook", 0, "not a public address"),
    ("http://169.254.169.254/latest/meta-data", 0, "not a public address"),
    ("http://10.1.2.3/hook", 0, "not a public address"),
    ("ftp://example.com/hook", 1, "http:// or https://"),
    ("http:///hook", 1, "http:// or https://"),
    ("http://no-such-host.invalid/hook", 0, "does not resolve"),
])
def test_a_callback_url_the_service_may_not_call_is_a_422(fresh_settings, url, allow_private, problem):
    client = create_app(fresh_settings(webhook_secret=SECRET, webhook_allow_private=allow_private)).test_client()
    (path, _), = valid_images(1)
    response = client.post("/api/v1/jobs", data={"file": [(io.BytesIO(path.read_bytes()), path.name)],
                                                 "callback_url": url}, content_type="multipart/form-data")
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "invalid_callback_url"
    assert problem in response.get_json()["error"]["message"]


def test_callback_url_without_a_secret_or_on_predict_is_refused(web_client):
    (path, _), = valid_images(1)
    for url, code, status in (("/api/v1/jobs", "webhooks_disabled", 422), ("/predict", "unexpected_field", 400)):
        response = web_client.post(url, data={"file": [(io.BytesIO(path.read_bytes()), path.name)],
                                              "callback_url": "https://example.com/hook"},
                                   content_type="multipart/form-data")
        assert response.status_code == status and response.get_json()["error"]["code"] == code


def test_an_empty_callback_url_is_none(web_client):
    """What a form sends for a field left empty (/docs's "Try it out" does): a job without a
    callback. Blanks are not empty: they are no URL."""
    (path, _), = valid_images(1)

    def submit(callback_url: str):
        return web_client.post("/api/v1/jobs", data={"file": [(io.BytesIO(path.read_bytes()), path.name)],
                                                     "callback_url": callback_url}, content_type="multipart/form-data")

    response = submit("")
    assert response.status_code == 202, response.get_json()
    assert web_client.get(response.get_json()["status_url"]).get_json()["callback"] is None
    assert web_client.delete(response.get_json()["status_url"]).status_code == 200
    assert submit("  ").get_json()["error"]["code"] == "webhooks_disabled"  # as any other callback_url here


def test_a_job_closed_by_cancelling_calls_back(hook_settings, hook_client, receiver):
    """No worker holds these images (their chunk was never queued): the DELETE closes the job, and
    the web process queues the delivery."""
    store = JobStore.for_settings(Redis.from_url(hook_settings.redis_url), hook_settings)
    job_id = "0c1d2e3f-4a5b-4c6d-8e7f-901234567890"
    store.create(job_id, ["a.jpg", "b.jpg"], {0: b"x", 1: b"y"}, {}, callback_url=receiver.url)
    assert hook_client.delete(f"/api/v1/jobs/{job_id}").status_code == 200
    job = settled_callback(hook_client, f"/api/v1/jobs/{job_id}")
    assert job["callback"]["status"] == "delivered"
    assert [r["status"] for r in json.loads(receiver.calls[0][1])["results"]] == ["cancelled", "cancelled"]


def test_each_attempt_checks_the_address_again(hook_settings, receiver):
    """A URL accepted at submit that now resolves to a private address (here: a worker that allows
    none) is not called: the attempt fails with the reason, and nothing reaches the receiver."""
    redis = Redis.from_url(hook_settings.redis_url)
    strict = dataclasses.replace(hook_settings, webhook_allow_private=0)
    store = JobStore.for_settings(redis, strict)
    job_id = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
    store.create(job_id, ["a.txt"], {}, {0: failure("not_an_image", "not an image")}, callback_url=receiver.url)
    redis.zrem(PENDING_CALLBACKS, job_id)  # this test's own attempt, not the running workers'
    delivery = Delivery(strict, store, Callbacks(redis, make_celery(strict), strict), {"name": "m", "version": "1"})
    assert delivery.attempt(job_id) == backoff_s(strict, 1)
    callback = store.get(job_id).callback
    assert callback["status"] == "pending" and callback["attempts"] == 1
    assert "not a public address" in callback["last_error"] and receiver.calls == []


def test_an_attempt_connects_to_the_address_it_checked(receiver):
    """The name in the URL is not resolved again when connecting (it does not resolve at all here):
    the connection goes to the checked address, and the receiver still sees the name as Host."""
    port = receiver.server.server_port
    with pinned_session("127.0.0.1") as session:
        answer = session.post(f"http://hooks.example.invalid:{port}/hook", data=b"{}", timeout=10)
    assert answer.status_code == 200
    (headers, body), = receiver.calls
    assert headers["Host"] == f"hooks.example.invalid:{port}" and body == b"{}"


def test_an_https_attempt_checks_the_certificate_of_the_name_not_the_address(receiver, tmp_path):
    receiver.use_tls(tmp_path, "hooks.example.test")
    port = receiver.server.server_port
    with pinned_session("127.0.0.1") as session:
        session.verify = str(receiver.cert)
        assert session.post(f"https://hooks.example.test:{port}/hook", data=b"{}", timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # the certificate names another host
            session.post(f"https://other.example.test:{port}/hook", data=b"{}", timeout=10)
    assert len(receiver.calls) == 1
