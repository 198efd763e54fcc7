"""`make bench`: one run that measures, on the same photos,
1. the ceiling: decode + preprocess + inference in one process (bench.ceiling);
2. the baseline: the original one-process synchronous design under 4 clients (bench.baseline);
   the peer: the same model behind LitServe, which batches requests (bench.peer), one image per
   request under 1, 4 and 16 clients;
3. our service end to end: 1- and 16-image jobs under 1, 4 and 16 clients, and where a lone
   1-image job's time goes (bench.breakdown);
4. scaling: 16-image jobs under 16 clients with 1, 2 and 3 worker processes.
It prints the tables and writes them to bench/results-latest.md (bench/RESULTS.md is the
history, kept by hand), and everything to bench/results.json.
A fixed number of images per phase (not a duration) bounds the run; the exit status is 1 if any
request failed, so a broken service cannot pass for a slow one.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench import report
from bench.ceiling import measure_ceiling
from bench.client import tally
from bench.images import large_jpeg, load_photos
from bench.memory import PeakRss
from bench.phases import run_baseline, run_peer, run_service
from common.settings import REPO, Settings
from harness import stopped_on_exit

SCALING_MODE = "WORKER_PROCESSES=N in one Celery worker, ONNX Runtime threads per process = cores / N"


@dataclass(frozen=True)
class Plan:
    images_per_phase: int
    decode_repeats: int
    clients: tuple[int, ...] = (1, 4, 16)
    job_sizes: tuple[int, ...] = (1, 16)
    worker_counts: tuple[int, ...] = (1, 2, 3)
    baseline_clients: int = 4
    breakdown_jobs: int = 200


# 256 = 16 clients x one 16-image job each: the largest phase still keeps every client busy.
FULL = Plan(images_per_phase=256, decode_repeats=15)
QUICK = Plan(images_per_phase=32, decode_repeats=3, breakdown_jobs=10)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    settings = Settings.from_env()  # MODEL_PATH and WORKER_PROCESSES if set, else the defaults
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description="The ceiling, the baseline and the service, on the same photos.")
    parser.add_argument("--model", default=settings.model_path, help="the served model (baseline and service), its card beside "
                        "it; the ceiling measures every model in its folder (default: %(default)s)")
    parser.add_argument("--worker-processes", type=int, default=settings.worker_processes,
                        help="pool processes of the worker in phase 3; 0: one per core, as in production "
                             "(default: $WORKER_PROCESSES or 0)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase: a smoke test, not a measurement")
    parser.add_argument("--out", type=Path, default=report.HERE, help="where results-latest.md and results.json go (default: bench/)")
    args = parser.parse_args(argv)
    args.worker_processes = replace(settings, worker_processes=args.worker_processes).processes  # 0: one per core
    if not Path(args.model).is_file():
        parser.error(f"no model at {args.model}: run `make export`, or pass --model or set MODEL_PATH")
    return args


def machine_info() -> dict:
    """Cores and load: numbers from a 2-core machine that was busy mean something else."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"cpu_count": os.cpu_count(), "platform": f"{platform.machine()}, Python {platform.python_version()}",
            "loadavg": load}


def ratios(ceiling: dict, baseline: dict, service: list[dict], model: str) -> dict:
    """The service's 16-image jobs under 16 clients, against the best the machine can do with
    the same model and batch size, and against the old design (which serves the same model)."""
    def service_rate(size):
        return next(s["images_per_s"] for s in service if s["job_size"] == size and s["clients"] == 16)
    def ceiling_rate(batch):
        return next(r["images_per_s"] for r in ceiling["rows"] if r["model"] == Path(model).name and r["batch"] == batch)
    return {"service (16-image jobs, 16 clients) / ceiling (same model, batch 16)": service_rate(16) / ceiling_rate(16),
            "service (16-image jobs, 16 clients) / baseline (4 clients)": service_rate(16) / baseline["images_per_s"],
            "service (1-image jobs, 16 clients) / baseline (4 clients)": service_rate(1) / baseline["images_per_s"],
            "baseline / ceiling (same model, batch 1)": baseline["images_per_s"] / ceiling_rate(1)}


def peer_ratios(peer: list[dict], service: list[dict]) -> dict:
    """Issue 14's yardstick: our jobs against the peer's requests under the same client count."""
    def rate(rows, size, clients, key="images_per_s"):
        return next(s[key] for s in rows if s["job_size"] == size and s["clients"] == clients)
    ratios = {f"service (1-image jobs, {c} clients) / peer (1-image requests, {c} clients)":
              rate(service, 1, c) / rate(peer, 1, c) for c in sorted({p["clients"] for p in peer})}
    ratios["service (16-image jobs, 16 clients) / peer (1-image requests, 16 clients)"] = rate(service, 16, 16) / rate(peer, 1, 16)
    ratios["p50 latency: service lone 1-image job / peer lone request (lower is better)"] = (
        rate(service, 1, 1, "p50_ms") / rate(peer, 1, 1, "p50_ms"))
    return ratios


def measure(args: argparse.Namespace, plan: Plan, logs: Path) -> dict:
    photos = load_photos(plan.images_per_phase)
    models = sorted(str(path) for path in Path(args.model).parent.glob("*.onnx"))
    print(f"ceiling ({', '.join(Path(m).name for m in models)})", flush=True)
    large = large_jpeg(photos[0])
    results = {"ceiling": measure_ceiling(models, photos, plan.images_per_phase, large, plan.decode_repeats)}
    with PeakRss() as memory:
        print("baseline", flush=True)
        results["baseline"] = run_baseline(args.model, photos, plan, logs, memory)
        print("peer (LitServe, dynamic batching)", flush=True)
        results["peer"] = run_peer(args.model, photos, plan, logs, memory)
        print(f"service (logs in {logs})", flush=True)
        results["service"], results["breakdown"], results["scaling"] = run_service(
            args.model, photos, plan, logs, memory, args.worker_processes)
    return results


def fresh_log_dir() -> Path:
    """var/bench (ignored by git, like bin/run's var/redis), emptied so its logs are this run's."""
    logs = REPO / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    return logs


def settings(args: argparse.Namespace, plan: Plan) -> dict:
    return {"quick": args.quick, "model": args.model,
            "images_per_phase": plan.images_per_phase, "scaling_mode": SCALING_MODE, "plan": asdict(plan)}


def exit_once(signum: int, _frame) -> None:
    """Handler for SIGTERM and SIGINT: the first unwinds the run, which stops every server on the
    way out; later ones are ignored so they cannot cut that clean-up short (`timeout` signals
    both its child and its own process group, and an impatient Ctrl-C often comes twice)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, exit_once)
    started, machine = time.monotonic(), machine_info()
    with stopped_on_exit():
        measured = measure(args, plan, fresh_log_dir())
    loads = [measured["baseline"], *measured["peer"], *measured["service"], *measured["scaling"]]
    results = {"machine": machine, "settings": settings(args, plan),
               "duration_s": time.monotonic() - started, **tally(loads),
               "ratios": ratios(measured["ceiling"], measured["baseline"], measured["service"], args.model)
               | peer_ratios(measured["peer"], measured["service"])} | measured
    print("\n" + report.write(results, args.out))
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
