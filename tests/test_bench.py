"""`make bench` end to end in its quick mode: every phase runs on the real stack, no request
fails, and the report carries the figures the README quotes. Its numbers are not checked: speed
is the benchmark's business, not the tests'."""
from __future__ import annotations

import json
import signal
import sys

import psutil
import pytest

from bench.heavy import main as heavy_main
from bench.round_trips import measure as round_trips
from bench.run import main
from bench.versus import main as versus_main
from harness import Service, wait_for


def test_quick_bench_runs_every_phase_without_failures(tmp_path):
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert main(["--quick", "--out", str(tmp_path)]) == 0
    finally:  # the bench installs its own Ctrl-C handling; pytest keeps its own
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failures"] == 0
    assert {(r["precision"], r["batch"]) for r in results["ceiling"]["rows"]} == {("fp32", 1), ("fp32", 16), ("int8", 1), ("int8", 16)}
    assert {(s["job_size"], s["clients"]) for s in results["service"]} == {(1, 1), (1, 4), (1, 16), (16, 1), (16, 4), (16, 16)}
    assert [p["clients"] for p in results["peer"]] == [1, 4, 16]
    assert results["resets"] == results["server_errors"] == 0
    assert [s["worker_processes"] for s in results["scaling"]] == [1, 2, 3]
    assert all(ms > 0 for ms in results["breakdown"]["median_ms"].values())  # NaN too fails: no task timings
    assert all(value > 0 for value in results["ratios"].values())
    assert "### Ratios" in (tmp_path / "results-latest.md").read_text()


def test_the_heavy_image_scenario_runs_both_layouts_without_failures(tmp_path):
    """`python -m bench.heavy` with one heavy job: light jobs idle and beside it, in both layouts."""
    assert heavy_main(["--heavy-jobs", "1", "--heavy-per-job", "1", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "heavy-latest.md").read_text()
    assert "| shared " in table and "| own process " in table


def test_the_interleaved_comparison_with_the_peer_runs_every_round_without_failures(tmp_path):
    """`python -m bench.versus`: both servers, each client count, each round, every request answered."""
    out = tmp_path / "versus.json"
    assert versus_main(["--rounds", "2", "--images", "8", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [(r["round"], r["clients"]) for r in results["rounds"]] == [(n, c) for n in (1, 2) for c in (1, 4, 16)]
    assert all(r["peer"]["images"] == r["service"]["images"] == 8 for r in results["rounds"])
    assert [(s["clients"], s["rounds"], s["failures"], s["resets"]) for s in results["summary"]] == [
        (1, 2, 0, 0), (4, 2, 0, 0), (16, 2, 0, 0)]
    assert [r["service"]["images"] for r in results["large_rounds"]] == [16, 16]  # one 16-image job a round
    assert results["large"]["failures"] == 0 and all(r["ceiling_images_per_s"] > 0 for r in results["large_rounds"])


def test_the_round_trip_count_counts_each_lone_photo(tmp_path):
    """`python -m bench.round_trips`: each lone photo's POST ?wait is answered done and talks to Redis."""
    per_job = round_trips(3, tmp_path)
    assert len(per_job) == 3 and all(count >= 1 for count in per_job)


def test_a_paused_server_stops_with_its_children_and_runs_again_after(tmp_path):
    """What bench.versus does to the peer while the service is measured: the whole process group
    stopped for the block (an idle server takes no CPU from the one measured), running after."""
    sleeper = Service("sleeper", tmp_path / "sleeper.log")
    child = "import time; time.sleep(60)"
    sleeper.launch([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"], {})
    try:
        parent = psutil.Process(sleeper.pid)
        group = [parent, *wait_for(parent.children, 10, "the child process")]

        def statuses() -> set[str]:
            return {process.status() for process in group}

        with sleeper.paused():
            wait_for(lambda: statuses() == {psutil.STATUS_STOPPED}, 10, "both processes stopped")
        wait_for(lambda: psutil.STATUS_STOPPED not in statuses(), 10, "both processes running again")
        with pytest.raises(KeyboardInterrupt), sleeper.paused():  # a Ctrl-C mid-measurement
            wait_for(lambda: statuses() == {psutil.STATUS_STOPPED}, 10, "both processes stopped")
            raise KeyboardInterrupt
        wait_for(lambda: psutil.STATUS_STOPPED not in statuses(), 10, "both processes running again")
    finally:
        sleeper.stop()
