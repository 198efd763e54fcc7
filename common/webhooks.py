"""Webhooks: what both sides need to call a client back once its job is done.

The web app checks a job's `callback_url` at submit (`check_url`); the job store's finish and
cancel scripts put a job that closes with a callback into the sorted set `webhooks:pending`
(`ON_CLOSE`, in the same script as the close, so no crash can lose it); the worker that closed it
queues a delivery task on the `webhooks` queue at once (`Callbacks.queue`), and the sweepers queue
any whose time came and went (its worker died first, or its task was lost). The delivery task
(worker/webhooks.py) signs the body (`signature_header`) and records the outcome in the job.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from urllib.parse import urlsplit

from celery import Celery
from redis import Redis

from common.settings import Settings

WEBHOOK_TASK = "worker.deliver_callback"
WEBHOOK_QUEUE = "webhooks"
PENDING_CALLBACKS = "webhooks:pending"  # member: job id; score: when a sweeper should queue it (again)
SIGNATURE_HEADER = "X-Sportclf-Signature"
MAX_URL_LENGTH = 2048
JOB_PREFIX = "job:"  # common/jobs.py's JobStore.key
# A closed job's delivery is queued by a sweeper after this if its worker did not queue it.
QUEUE_GRACE_S = 30
MAX_BACKOFF_S = 60
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
CALLBACK_STATUSES = (PENDING, DELIVERED, FAILED)
log = logging.getLogger(__name__)

# Lua, run by the job store's scripts when the last image of job KEYS[1] ("job:<id>") becomes final:
# a job with a callback is due for delivery. Sets `hook` (declared by the caller) to 1 if so.
ON_CLOSE = f"""
if redis.call('HEXISTS', KEYS[1], 'callback') == 1 then
  local t = redis.call('TIME')
  redis.call('ZADD', '{PENDING_CALLBACKS}', t[1] + {QUEUE_GRACE_S}, string.sub(KEYS[1], {len(JOB_PREFIX) + 1}))
  hook = 1
end
"""

# Records a delivery's progress (ARGV[1], JSON) in job KEYS[1] if it still exists (an expired job
# must not come back as a stray key); ends its pending entry (job id ARGV[2]) once ARGV[3] is '1'.
_RECORD = f"""
if ARGV[3] == '1' then redis.call('ZREM', '{PENDING_CALLBACKS}', ARGV[2]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'callback', ARGV[1])
return 1
"""

# Takes the due entries and pushes each one's time on by ARGV[1] s (a taker that dies leaves it
# due again later, as common/chunks.py does with chunks).
_CLAIM_DUE = """
local t = redis.call('TIME')
local now = t[1] + t[2] / 1e6
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, job_id in ipairs(due) do redis.call('ZADD', KEYS[1], now + ARGV[1], job_id) end
return due
"""


def new_callback(url: str) -> dict:
    """The `callback` of a job document before any attempt."""
    return {"url": url, "status": PENDING, "attempts": 0, "last_error": None}


class RefusedURL(ValueError):
    """A callback URL the service may not call; the message says why, for the client."""


def check_url(url: str, allow_private: bool) -> str | None:
    """Why `url` may not be called back, or None if it may (see `address_to_call`)."""
    try:
        address_to_call(url, allow_private)
    except RefusedURL as exc:
        return str(exc)
    return None


def address_to_call(url: str, allow_private: bool) -> str | None:
    """The address to connect to for `url`: only http(s), to a host whose every address is public,
    unless private ones are allowed (then None: the name is resolved when connecting). Checked at
    submit and again before each attempt, which connects to the address checked, so a name that
    resolves elsewhere in between (DNS rebinding) cannot steer it. Raises RefusedURL."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise RefusedURL(f"callback_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedURL("callback_url must be an http:// or https:// URL with a host")
    return None if allow_private else _public_address(parts.hostname, port)


def _public_address(host: str, port: int) -> str:
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]
    except (OSError, UnicodeError) as exc:
        raise RefusedURL(f"callback_url's host {host!r} does not resolve: {exc}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if not ip.is_global or ip.is_multicast:
            raise RefusedURL(f"callback_url's host {host!r} resolves to {ip}, which is not a public address; the "
                             "service calls back public addresses only (WEBHOOK_ALLOW_PRIVATE=1 lifts this)")
    return addresses[0]


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the receiver recomputes it with the
    shared secret, and refuses an old `t` so that a captured request cannot be replayed later."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait after `attempts` failed attempts: WEBHOOK_BACKOFF_S, doubled each time, at most
    MAX_BACKOFF_S (below the broker's visibility timeout, so a waiting retry is not redelivered)."""
    return min(MAX_BACKOFF_S, settings.webhook_backoff_s * 2 ** (attempts - 1))


def lease_s(settings: Settings) -> float:
    """How long a whole delivery may take, every attempt and wait included, with a minute to spare:
    a sweeper queues it again only after this."""
    waits = sum(backoff_s(settings, n) for n in range(1, settings.webhook_attempts))
    return waits + settings.webhook_attempts * settings.webhook_timeout_s * 2 + 60


class Callbacks:
    """The pending set, each job's `callback` record, and queueing the delivery tasks."""

    def __init__(self, redis: Redis, celery: Celery, settings: Settings):
        self.redis, self.celery, self.lease_s = redis, celery, lease_s(settings)
        self._record = redis.register_script(_RECORD)
        self._claim_due = redis.register_script(_CLAIM_DUE)

    def queue(self, job_id: str) -> None:
        """Sends the delivery task and pushes the pending entry's time past the whole delivery; if
        the broker refuses, the entry stays due for a sweeper."""
        try:
            self.celery.send_task(WEBHOOK_TASK, args=[job_id], queue=WEBHOOK_QUEUE)
        except Exception:  # kombu raises several kinds mid-failure (see common/queue.py)
            log.warning("job %s: could not queue its callback; a sweeper will", job_id, exc_info=True)
            return
        seconds, micros = self.redis.time()
        self.redis.zadd(PENDING_CALLBACKS, {job_id: seconds + micros / 1e6 + self.lease_s}, xx=True)

    def sweep(self) -> None:
        """Queues the deliveries whose time came: their worker died before queueing them, or their
        task was lost. Each goes to one sweeper at a time (see _CLAIM_DUE)."""
        for job_id in self._claim_due(keys=[PENDING_CALLBACKS], args=[self.lease_s]):
            log.warning("job %s: queueing its callback, which was not queued or not ended in time", job_id.decode())
            self.queue(job_id.decode())

    def end(self, job_id: str) -> None:
        """Nothing is left to deliver for this job (a duplicate task found it done, or it expired)."""
        self.redis.zrem(PENDING_CALLBACKS, job_id)

    def record(self, job_id: str, callback: dict, final: bool) -> bool:
        """Writes the callback's state; `final` ends its pending entry. False if the job is gone."""
        args = [json.dumps(callback), job_id, "1" if final else "0"]
        return bool(self._record(keys=[JOB_PREFIX + job_id], args=args))
