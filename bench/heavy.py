"""Light jobs beside heavy ones (issue 13): the light jobs' latency on an idle service, then while
jobs of heavy images (lossless RGBA WebPs that decode to just under MAX_DECODE_MB, so they are
accepted and run, each alone) are classified, in two layouts:
- one worker consuming both queues, as before heavy images had a worker process of their own;
- `make run`'s layout: the main worker takes light chunks only (-X celery.heavy) and a second
  worker with one process takes the heavy queue.
It also says whether any pool process was replaced meanwhile (killed by a time or memory limit).
Run as `python -m bench.heavy [--heavy-jobs N --heavy-per-job M]`; writes bench/heavy-latest.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import threading
from pathlib import Path

import psutil
from PIL import Image

from bench import report
from bench.client import run_load, submit_and_wait
from bench.images import Photo, batches, load_photos
from common.queue import heavy_queue, CELERY_QUEUE
from common.settings import REPO, Settings
from harness import RedisServer, WebServer, Worker, stopped_on_exit

LIGHT_JOBS, LIGHT_JOB_SIZE, LIGHT_CLIENTS = 24, 4, 2
# Each layout's workers' queue options: one worker for every queue, or make run's two.
LAYOUTS = {"shared": [[]], "own process": [["-X", heavy_queue(CELERY_QUEUE)], ["-Q", heavy_queue(CELERY_QUEUE)]]}
SIDE = 5656  # 5656 x 5656 x 4 bytes: just under the default MAX_DECODE_MB (128 MiB)


def heavy_webp(side: int = SIDE) -> Photo:
    """A few KB of lossless RGBA WebP that decodes to side x side x 4 bytes."""
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (40, 90, 160, 255)).save(buffer, "WEBP", lossless=True)
    return Photo("heavy.webp", buffer.getvalue())


def pool(workers: list[Worker]) -> set[int]:
    return {p.pid for w in workers for p in psutil.Process(w.pid).children(recursive=True)}


def light_load(url: str, photos: list[Photo]) -> dict:
    return run_load(batches(photos, LIGHT_JOB_SIZE, LIGHT_JOBS * LIGHT_JOB_SIZE), LIGHT_CLIENTS,
                    submit_and_wait(url)).summary()


def layout(name: str, settings: Settings, logs: Path, photos: list[Photo], heavy: list[list[Photo]]) -> dict:
    """Light p95 idle and beside the heavy jobs, with the workers `name` stands for."""
    redis = RedisServer(logs / f"redis-{name}").start()
    mine = dataclasses.replace(settings, redis_url=redis.url)
    queues = LAYOUTS[name]
    envs = [{}, {"WORKER_PROCESSES": "1", "WORKER_THREADS": "1"}]  # the heavy worker: one process, one thread
    workers = [Worker(mine, logs / f"worker-{name}-{i}.log", envs[i], q).start() for i, q in enumerate(queues)]
    web = WebServer(mine, logs / f"web-{name}.log").start()
    try:
        light_load(web.url, photos)  # warm-up
        idle, before = light_load(web.url, photos), pool(workers)
        heavy_run = threading.Thread(target=run_load, args=(heavy, len(heavy), submit_and_wait(web.url)), daemon=True)
        heavy_run.start()
        beside = light_load(web.url, photos)
        heavy_run.join()
        return {"layout": name, "idle": idle, "beside": beside, "pool_replaced": bool(before - pool(workers))}
    finally:
        for process in (web, *workers, redis):
            process.stop()


def render(rows: list[dict], heavy_jobs: int, per_job: int) -> str:
    headers = ["heavy images", "light p50 ms idle", "light p95 ms idle", "light p50 ms beside", "light p95 ms beside",
               "p95 beside / idle", "failures", "pool process replaced"]
    lines = [[r["layout"], report.num(r["idle"]["p50_ms"], 0), report.num(r["idle"]["p95_ms"], 0),
              report.num(r["beside"]["p50_ms"], 0), report.num(r["beside"]["p95_ms"], 0),
              f"{r['beside']['p95_ms'] / r['idle']['p95_ms']:.2f}x",
              str(r["idle"]["failures"] + r["beside"]["failures"]), "yes" if r["pool_replaced"] else "no"]
             for r in rows]
    return "\n\n".join([f"### Light jobs ({LIGHT_JOBS} of {LIGHT_JOB_SIZE} photos, {LIGHT_CLIENTS} clients) beside "
                         f"{heavy_jobs} jobs of {per_job} heavy WebPs ({SIDE}x{SIDE} RGBA)",
                         report.table(headers, lines)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.heavy", description=__doc__.split("\n")[0])
    parser.add_argument("--heavy-jobs", type=int, default=4)
    parser.add_argument("--heavy-per-job", type=int, default=3)
    parser.add_argument("--out", type=Path, default=report.HERE)
    args = parser.parse_args(argv)
    photos, settings = load_photos(LIGHT_JOBS * LIGHT_JOB_SIZE), Settings.from_env(rate_limit="")
    heavy = [[heavy_webp()] * args.heavy_per_job for _ in range(args.heavy_jobs)]
    logs = REPO / "var" / "bench-heavy"
    logs.mkdir(parents=True, exist_ok=True)
    with stopped_on_exit():
        rows = [layout(name, settings, logs, photos, heavy) for name in LAYOUTS]
    text = render(rows, args.heavy_jobs, args.heavy_per_job)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "heavy-latest.md").write_text(text + "\n")
    return 1 if any(r["idle"]["failures"] or r["beside"]["failures"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
