"""Prometheus plumbing the web app and the workers share: where a process tree keeps its metrics,
and what a scrape answers.

Multiprocess mode (prometheus_client's): each process (a gunicorn worker, a Celery pool process)
writes its values to files in one directory, and the process that answers a scrape adds them up,
so every process counts whichever one is asked. prometheus_client picks its storage when it is
first imported, from PROMETHEUS_MULTIPROC_DIR: `use_directory` must run before that, which is why
this module imports prometheus_client only inside the functions that scrape.
"""
from __future__ import annotations

import hmac
import os
import shutil
import sys
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
OWN_PREFIX = "sportclf-metrics-"


def use_directory(kind: str) -> Path:
    """Names the metrics directory for this process and the children it forks: the one
    PROMETHEUS_MULTIPROC_DIR gives, emptied of an earlier run's files (counters start at zero with
    the service, as Prometheus expects), or else a fresh one of its own."""
    given = os.environ.get(VARIABLE)
    if "prometheus_client" in sys.modules:
        if given:  # set up already (gunicorn reading its configuration again)
            return Path(given)
        raise RuntimeError(f"prometheus_client was imported before {VARIABLE} was set: "
                           "its metrics would not add up across processes")
    if not given:
        os.environ[VARIABLE] = tempfile.mkdtemp(prefix=f"{OWN_PREFIX}{kind}-")
        return Path(os.environ[VARIABLE])
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    return path


def remove_own(path: Path) -> None:
    """At exit: removes the directory if `use_directory` made it (one it was given stays)."""
    if path.name.startswith(OWN_PREFIX):
        shutil.rmtree(path, ignore_errors=True)


def multiprocess() -> bool:
    return bool(os.environ.get(VARIABLE))


def forget_process(pid: int) -> None:
    """A process ended: its live gauges go (its counters stay, as counters must)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp
        mp.mark_process_dead(pid)


class Scrape:
    """What one scrape reads: every process's values (from the files, in multiprocess mode, else
    `own`, this process's registry) and then `extra` collectors, read as they are asked."""

    def __init__(self, own, *extra):
        from prometheus_client.multiprocess import MultiProcessCollector
        self.sources = [MultiProcessCollector(None) if multiprocess() else own, *extra]

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def authorized(header: str | None, token: str) -> bool:
    """With a token set, a scrape must send `Authorization: Bearer <token>`; without, any may."""
    return not token or hmac.compare_digest((header or "").encode(), f"Bearer {token}".encode())
