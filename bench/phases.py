"""The load phases: the baseline, the peer (bench.peer) with one image per request, then our service under each job size and client count, then
the same service with more worker processes. Each phase starts with the memory peaks reset, so
the RSS reported is the peak of that phase alone."""
from __future__ import annotations

from pathlib import Path

from bench.breakdown import latency_breakdown
from bench.client import peer_predict, predict, run_load, submit_and_wait
from bench.images import Photo, batches
from bench.memory import PeakRss
from bench.stack import OneServer, ServiceStack

SCALING_JOB_SIZE, SCALING_CLIENTS = 16, 16


def _print(label: str, summary: dict) -> None:
    print(f"  {label}: {summary['images_per_s']:.1f} images/s, p50 {summary['p50_ms']:.0f} ms, "
          f"p95 {summary['p95_ms']:.0f} ms, failures {summary['failures']} (resets {summary['resets']}, "
          f"5xx {summary['server_errors']})", flush=True)


def warm_up(send, photos: list[Photo], clients: int, size: int = 16) -> None:
    """Untimed jobs first: each process's first inference pays one-off set-up costs. A failure
    here is shown, not counted: the measured phases that follow will count their own."""
    result = run_load(batches(photos, size, 32 * clients), clients, send)
    if result.failures:
        print(f"  warm-up: {result.failures} failed: {result.errors[:2]}", flush=True)


def run_baseline(model: str, photos: list[Photo], plan, logs: Path, memory: PeakRss) -> dict:
    """The old design under `plan.baseline_clients` clients, one image per request."""
    with OneServer("bench.baseline", model, logs) as server:
        memory.watch("baseline", server.process.pid)
        send = predict(server.url)
        run_load(batches(photos, 1, 8), plan.baseline_clients, send)  # warm-up, untimed
        memory.take()
        result = run_load(batches(photos, 1, plan.images_per_phase), plan.baseline_clients, send)
        summary = result.summary() | {"job_size": 1, "peak_rss_mb": memory.take()}
    memory.forget("baseline")
    _print(f"baseline, {plan.baseline_clients} clients", summary)
    return summary


def run_peer(model: str, photos: list[Photo], plan, logs: Path, memory: PeakRss) -> list[dict]:
    """The peer under each client count, one image per request, as 1-image jobs are sent."""
    phases = []
    with OneServer("bench.peer", model, logs) as server:
        memory.watch("peer", server.process.pid)
        send = peer_predict(server.url)
        warm_up(send, photos, 2, size=1)
        for clients in plan.clients:
            memory.take()
            result = run_load(batches(photos, 1, plan.images_per_phase), clients, send)
            phases.append(result.summary() | {"job_size": 1, "peak_rss_mb": memory.take()})
            _print(f"peer, 1-image requests, {clients} clients", phases[-1])
    memory.forget("peer")
    return phases


def service_phase(stack: ServiceStack, memory: PeakRss, photos: list[Photo], size: int, clients: int, plan) -> dict:
    """`clients` clients sending jobs of `size` images until the phase's images are sent."""
    stack.check_alive()
    memory.take()
    result = run_load(batches(photos, size, plan.images_per_phase), clients, submit_and_wait(stack.url))
    summary = result.summary() | {"job_size": size, "worker_processes": stack.worker_processes,
                                  "peak_rss_mb": memory.take()}
    _print(f"{size}-image jobs, {clients} clients, {stack.worker_processes} worker process(es)", summary)
    return summary


def run_service(model: str, photos: list[Photo], plan, logs: Path, memory: PeakRss,
                worker_processes: int) -> tuple[list[dict], dict, list[dict]]:
    """Phase 3 with `worker_processes` (and the 1-image latency breakdown), then phase 4
    restarting the worker for each count."""
    with ServiceStack(model, logs, worker_processes) as stack:
        memory.watch("web", stack.web.pid)
        memory.watch("worker", stack.worker.pid)
        warm_up(submit_and_wait(stack.url), photos, worker_processes)
        service = [service_phase(stack, memory, photos, size, clients, plan)
                   for size in plan.job_sizes for clients in plan.clients]
        breakdown = latency_breakdown(stack.url, photos, plan.breakdown_jobs, logs / "worker.log")
        print("  1-image job, median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in breakdown["median_ms"].items()), flush=True)
        scaling = []
        for processes in plan.worker_counts:
            stack.start_worker(processes)
            memory.watch("worker", stack.worker.pid)
            warm_up(submit_and_wait(stack.url), photos, processes)
            scaling.append(service_phase(stack, memory, photos, SCALING_JOB_SIZE, SCALING_CLIENTS, plan))
    return service, breakdown, scaling
