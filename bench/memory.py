"""Peak memory of each process tree under test, sampled in a background thread during each phase:
the peak, reached under load, is what sizes a machine, so a reading taken at the end would miss it.

A tree's figure is the sum of its processes' RSS (parent plus all children, e.g. gunicorn's
workers or Celery's pool); pages that forked processes share are counted once per process, so it
errs high, the safe side for sizing. The largest single process is kept too (`<name> process`):
that is what a per-process memory budget is about."""
from __future__ import annotations

import threading

import psutil

MB = 1024 * 1024


def tree_rss(pid: int) -> list[int]:
    """Bytes resident in `pid` and in each of its descendants; empty once the process is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    sizes = []
    for process in processes:
        try:
            sizes.append(process.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # a child that exited between listing and reading
    return sizes


class PeakRss:
    """Keeps the highest tree RSS seen per watched name since the last `take()`."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self._pids: dict[str, int] = {}
        self._peaks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, name: str, pid: int) -> None:
        """Starts (or, after a restart, re-points) sampling the tree of `pid` under `name`."""
        with self._lock:
            self._pids[name] = pid
            self._peaks[name] = self._peaks[f"{name} process"] = 0

    def take(self) -> dict[str, float]:
        """The peaks in MB since the last call, then a fresh start: one call per phase."""
        self._sample()
        with self._lock:
            peaks = {name: round(value / MB, 1) for name, value in self._peaks.items()}
            self._peaks = dict.fromkeys(self._peaks, 0)
        return peaks

    def forget(self, name: str) -> None:
        with self._lock:
            self._pids.pop(name, None)
            self._peaks.pop(name, None)
            self._peaks.pop(f"{name} process", None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            pids = dict(self._pids)
        trees = {name: tree_rss(pid) for name, pid in pids.items()}
        with self._lock:
            for name, sizes in trees.items():
                if name in self._peaks:
                    self._peaks[name] = max(self._peaks[name], sum(sizes))
                    self._peaks[f"{name} process"] = max(self._peaks.get(f"{name} process", 0), max(sizes, default=0))
