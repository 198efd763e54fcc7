"""`python -m bench.versus`: the service against the peer (bench.peer) on one-image traffic, in
interleaved rounds.

This machine's speed drifts within a minute (bench/RESULTS.md), so phases measured a minute apart,
as `bench.run` measures the peer and then the service, can swing a ratio by half. Here both run
side by side and each round measures, at every client count, the peer and the service back to
back (the order alternating by round); then 16-image jobs from 16 clients, and the ceiling (decode
+ inference in this process, batches of 16) just after. The peer is paused (SIGSTOP) whenever it
is not the one measured: idle, it still takes a quarter of a core, where the idle service takes
next to nothing (bench/RESULTS.md). Each round's ratios, and their medians over the rounds, are
what to read. The exit status is 1 if any request failed.

    python -m bench.versus --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

from bench.ceiling import images_per_second, load_classifier
from bench.client import peer_predict, run_load, submit_and_wait, tally
from bench.images import batches, load_photos
from bench.phases import warm_up
from bench.run import fresh_log_dir, machine_info
from bench.stack import OneServer, ServiceStack
from common.settings import Settings
from harness import stopped_on_exit

CLIENTS = (1, 4, 16)


def rounds(peer: OneServer, service_url: str, photos: list, count: int, images: int, model: str) -> tuple[list, list]:
    """Each round: at each client count, the peer and the service (the order alternating by
    round), one image per request or job; then the service's 16-image jobs from 16 clients, and
    the ceiling, against the round's peer at 16 clients."""
    sends = {"peer": peer_predict(peer.url), "service": submit_and_wait(service_url)}
    alone = {"peer": contextlib.nullcontext, "service": peer.process.paused}
    classifier = load_classifier(model)
    measured, large = [], []
    for number in range(count):
        order = ("peer", "service") if number % 2 == 0 else ("service", "peer")
        for clients in CLIENTS:
            row = {"round": number + 1, "clients": clients}
            for side in order:
                with alone[side]():
                    row[side] = run_load(batches(photos, 1, images), clients, sends[side]).summary()
            row["throughput_ratio"] = row["service"]["images_per_s"] / row["peer"]["images_per_s"]
            row["p50_ratio"] = row["service"]["p50_ms"] / row["peer"]["p50_ms"]
            print(f"  round {row['round']}, {clients:>2} clients: peer {row['peer']['images_per_s']:.1f} images/s "
                  f"(p50 {row['peer']['p50_ms']:.1f} ms), service {row['service']['images_per_s']:.1f} "
                  f"(p50 {row['service']['p50_ms']:.1f} ms): {row['throughput_ratio']:.2f}x", flush=True)
            measured.append(row)
        with peer.process.paused():
            jobs = run_load(batches(photos, 16, images), 16, sends["service"]).summary()
            ceiling = images_per_second(classifier, photos, 16, images)
        large.append({"round": number + 1, "service": jobs, "ceiling_images_per_s": ceiling,
                      "peer_ratio": jobs["images_per_s"] / measured[-1]["peer"]["images_per_s"],
                      "ceiling_ratio": jobs["images_per_s"] / ceiling})
        print(f"  round {number + 1}, 16-image jobs, 16 clients: {jobs['images_per_s']:.1f} images/s, "
              f"{large[-1]['peer_ratio']:.2f}x the peer, {large[-1]['ceiling_ratio']:.2f}x the ceiling "
              f"({ceiling:.1f})", flush=True)
    return measured, large


def summary(measured: list[dict]) -> list[dict]:
    """Per client count: the median over rounds of the service/peer throughput ratio (and of the
    p50 ratio: for one client, the lone request), the range, and the failures of every round."""
    rows = []
    for clients in CLIENTS:
        mine = [r for r in measured if r["clients"] == clients]
        ratios, p50s = [r["throughput_ratio"] for r in mine], [r["p50_ratio"] for r in mine]
        rows.append({"clients": clients, "rounds": len(mine), "median_throughput_ratio": statistics.median(ratios),
                     "min": min(ratios), "max": max(ratios), "median_p50_ratio": statistics.median(p50s),
                     **tally(r[side] for r in mine for side in ("peer", "service"))})
    return rows


def large_summary(large: list[dict]) -> dict:
    """The 16-image rounds: medians (and ranges) of the ratios to the peer and to the ceiling."""
    peer, ceiling = [r["peer_ratio"] for r in large], [r["ceiling_ratio"] for r in large]
    return {"rounds": len(large), "median_peer_ratio": statistics.median(peer), "peer_range": [min(peer), max(peer)],
            "median_ceiling_ratio": statistics.median(ceiling), "ceiling_range": [min(ceiling), max(ceiling)],
            **tally(r["service"] for r in large)}


def table(rows: list[dict], large: dict) -> str:
    lines = ["| one-image traffic | rounds | service / peer, images/s: median (range) | service / peer, p50: median | "
             "failures | resets | 5xx |", "|---|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['clients']} clients | {r['rounds']} | {r['median_throughput_ratio']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) | "
              f"{r['median_p50_ratio']:.2f}x | {r['failures']} | {r['resets']} | {r['server_errors']} |" for r in rows]
    (p_lo, p_hi), (c_lo, c_hi) = large["peer_range"], large["ceiling_range"]
    lines += ["", "| 16-image jobs, 16 clients | rounds | / peer (1-image requests, 16 clients): median (range) | "
              "/ ceiling (batch 16): median (range) | failures | resets | 5xx |", "|---|---:|---|---|---:|---:|---:|",
              f"| service | {large['rounds']} | {large['median_peer_ratio']:.2f}x ({p_lo:.2f}-{p_hi:.2f}) | "
              f"{large['median_ceiling_ratio']:.2f}x ({c_lo:.2f}-{c_hi:.2f}) | {large['failures']} | {large['resets']} | "
              f"{large['server_errors']} |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=settings.model_path, help="served by both (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=256, help="images per phase (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="also write the rounds and the summary here, as JSON")
    args = parser.parse_args(argv)
    photos, logs = load_photos(args.images), fresh_log_dir()
    print(f"machine: {machine_info()}; service batch linger {settings.batch_linger_s} s", flush=True)
    with stopped_on_exit(), OneServer("bench.peer", args.model, logs) as peer, \
            ServiceStack(args.model, logs, settings.processes) as stack:
        warm_up(peer_predict(peer.url), photos, 2, size=1)
        warm_up(submit_and_wait(stack.url), photos, 2, size=1)
        measured, large = rounds(peer, stack.url, photos, args.rounds, args.images, args.model)
    rows, big = summary(measured), large_summary(large)
    print("\n" + table(rows, big))
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_info(), "rounds": measured, "summary": rows,
                                        "large_rounds": large, "large": big}, indent=1))
    return 1 if any(r["failures"] for r in rows) or big["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
