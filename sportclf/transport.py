"""Requests to the service: asked again while it is busy or unreachable, and every way it can
fail turned into a one-line reason."""
from __future__ import annotations

import logging
import re
import time
from typing import Callable

import requests

WAIT_STATUSES = {429, 502, 503, 504}  # busy or restarting: worth asking again
MAX_PAUSE_S = 30
log = logging.getLogger(__name__)


class ServiceError(Exception):
    """The service cannot be used at all (unreachable, or it refuses every request); one line."""


class Refused(Exception):
    """A job that ended without results: its images fail with this code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def ask(send: Callable[[], requests.Response], deadline: float) -> requests.Response | None:
    """The service's answer, asking again while it is busy or unreachable; None past `deadline`."""
    pause = 1.0
    while True:
        try:
            response = send()
            if response.status_code not in WAIT_STATUSES:
                return response
            retry_after = response.headers.get("Retry-After", "")
            pause = max(1.0, float(retry_after)) if retry_after.isdigit() else pause
            why = f"busy (HTTP {response.status_code})"
        except requests.RequestException as exc:
            why = f"unreachable ({reason(exc)})"
        if time.monotonic() + pause > deadline:
            return None
        log.info("the service is %s; asking again in %.0f s", why, pause)
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)


def answer(response: requests.Response) -> dict:
    """The JSON body of a success; Refused if it is not what the API promises (a proxy's page, say)."""
    try:
        body = response.json()
        if isinstance(body, dict) and ("status_url" in body or "results" in body):
            return body
    except ValueError:
        pass
    raise Refused("bad_answer", f"an answer that is not the API's (HTTP {response.status_code})")


def error_message(response: requests.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def reason(exc: requests.RequestException) -> str:
    """A short cause ("Connection refused") rather than urllib3's nested repr."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found[-1].strip() if found else type(exc).__name__
