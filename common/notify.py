"""One subscription per process to every job's "done" message, shared by all its long polls.

redis-py's PubSub closes its connection when a poll ends (the connection is left subscribed
otherwise), so a subscription per long poll costs a new connection, handshake included, for every
poll: a large share of a web process's work for one-photo jobs (issue 14). Here one connection
per process listens to the pattern of every job's channel (one message per finished job, carrying
its record) and hands the message to the polls waiting on that job. A message lost while Redis
restarts costs at most RECHECK_S: each poll reads its job again that often, and every poll is woken
(with no message: it reads its job) when the subscription comes back.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis

RECHECK_S = 5.0
log = logging.getLogger(__name__)


class Mailbox:
    """Where the listener leaves one waiter's message."""

    def __init__(self):
        self._arrived = threading.Event()
        self._message: bytes | None = None

    def put(self, message: bytes | None) -> None:
        """`message`: the channel's; None wakes the waiter to read for itself."""
        self._message = message
        self._arrived.set()

    def take(self, timeout_s: float) -> bytes | None:
        """Waits up to `timeout_s` for a message; the message, or None (none came, or a bare wake)."""
        self._arrived.wait(timeout_s)
        self._arrived.clear()  # before the message is taken: one put after this ends the next wait
        message, self._message = self._message, None
        return message


class DoneListener:
    """Hands a message on a channel that matches `pattern` to the channel's waiters. Its thread
    starts on first use, so a process that forks after making it (gunicorn) listens in the child."""

    def __init__(self, redis: Redis, pattern: str):
        self.redis, self.pattern = redis, pattern
        self._waiters: dict[bytes, set[Mailbox]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def waiting(self, channel: str) -> Iterator[Mailbox]:
        """A mailbox for `channel`'s messages (and the wakes when the subscription comes back).
        Registered before the caller reads its job, so that a finish in between cannot be missed."""
        self._start()
        mailbox, key = Mailbox(), channel.encode()
        with self._lock:
            self._waiters.setdefault(key, set()).add(mailbox)
        try:
            yield mailbox
        finally:
            with self._lock:
                waiters = self._waiters.get(key, set())
                waiters.discard(mailbox)
                if not waiters:
                    self._waiters.pop(key, None)

    def _start(self) -> None:
        """Starts listening once, and waits (briefly) for the subscription: until then a waiter
        relies on reading its job every RECHECK_S."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen_forever, name="job-done-listener", daemon=True)
                self._thread.start()
        self._subscribed.wait(1)

    def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                self._listen()
            except Exception:  # Redis restarting or gone: wake every poll to read again, then retry
                failures = 0 if self._subscribed.is_set() else failures + 1
                log.warning("job-done subscription lost; subscribing again", exc_info=failures <= 1)
            self._subscribed.clear()
            self._wake(None)
            time.sleep(min(0.5 * 2 ** failures, 30))

    def _listen(self) -> None:
        with self.redis.pubsub() as pubsub:
            pubsub.psubscribe(self.pattern)
            while True:
                message = pubsub.get_message(timeout=RECHECK_S)
                if message is None:
                    continue
                if message["type"] == "psubscribe":  # (again): what finished meanwhile is read again
                    self._subscribed.set()
                    self._wake(None)
                elif message["type"] == "pmessage":
                    self._wake(message["channel"], message["data"])

    def _wake(self, channel: bytes | None, message: bytes | None = None) -> None:
        """Hands `message` to the waiters on `channel` (None: wakes every waiter, with no message)."""
        with self._lock:
            chosen = self._waiters.keys() if channel is None else [channel]
            mailboxes = [mailbox for key in chosen for mailbox in self._waiters.get(key, ())]
        for mailbox in mailboxes:
            mailbox.put(message)
