"""One subscription per process to every job's "done" message, shared by all its long polls.

redis-py's PubSub closes its connection when a poll ends (the connection is left subscribed
otherwise), so a subscription per long poll costs a new connection, handshake included, for every
poll: a large share of a web process's work for one-photo jobs (issue 14). Here one connection
per process listens to the pattern of every job's channel (one message per finished job) and wakes
the polls waiting on that job. A message lost while Redis restarts costs at most RECHECK_S: each
poll reads its job again that often, and every poll is woken when the subscription comes back.
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


class DoneListener:
    """Wakes the waiters of a channel that matches `pattern` when it gets a message. Its thread
    starts on first use, so a process that forks after making it (gunicorn) listens in the child."""

    def __init__(self, redis: Redis, pattern: str):
        self.redis, self.pattern = redis, pattern
        self._waiters: dict[bytes, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def waiting(self, channel: str) -> Iterator[threading.Event]:
        """An event set when `channel` gets a message (or the subscription came back). Registered
        before the caller reads its job, so that a finish in between cannot be missed."""
        self._start()
        event, key = threading.Event(), channel.encode()
        with self._lock:
            self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiters = self._waiters.get(key, set())
                waiters.discard(event)
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
                    self._wake({message["channel"]})

    def _wake(self, channels: set[bytes] | None) -> None:
        """Sets the events of the waiters on `channels` (None: on every channel)."""
        with self._lock:
            chosen = self._waiters.keys() if channels is None else channels
            events = [event for channel in chosen for event in self._waiters.get(channel, ())]
        for event in events:
            event.set()
