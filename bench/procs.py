"""Starting and stopping the benchmark's processes. Each runs in its own session (process group),
so stopping it reaches its children too (gunicorn's workers, Celery's pool), a Ctrl-C at the
terminal reaches only the benchmark (whose `finally` then stops them in order), and nothing
outlives the run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from common.settings import REPO


def free_port() -> int:
    """A port nothing listens on now: private ports keep the run apart from a service in use."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Polls `condition` until it is truthy; a start-up that hangs fails the run, clearly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


class Process:
    """One started command with its log file; `stop()` may be called twice, or after a crash."""

    started: list["Process"] = []  # every one ever started, for stop_all()

    def __init__(self, name: str, args: list[str], env: dict, log: Path):
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        Process.started.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> bool:
        """True while running; raises if it died, since waiting on a dead process wastes the run."""
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.popen.returncode}; see {self.log}")
        return True

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM first (Celery finishes its task, gunicorn its requests), SIGKILL if that hangs;
        then SIGKILL to whatever is left of the group, so no orphaned child lingers."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait()
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # the group this process leads (start_new_session)
        except ProcessLookupError:
            pass  # the whole group is gone already


def stop_all() -> None:
    """The backstop for the context managers: stops anything still running, newest first (so a
    worker goes before its Redis), e.g. one started just as a signal cut its owner's start short."""
    for process in reversed(Process.started):
        process.stop()


def exit_once(signum: int, _frame) -> None:
    """Handler for SIGTERM and SIGINT: the first unwinds the run, which stops every server on the
    way out; later ones are ignored so they cannot cut that clean-up short (`timeout` signals
    both its child and its own process group, and an impatient Ctrl-C often comes twice)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
