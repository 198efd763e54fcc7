"""The results as people read them: markdown tables (aligned, so they read well in a terminal and
paste into the README as they are), and as JSON for tools. Formatting only; no measuring here."""
from __future__ import annotations

import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
LATENCY = ("p50_ms", "p95_ms", "p99_ms")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table padded to column width; numbers (and dashes) right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    right = [all(_numeric(row[i]) for row in rows) for i in range(len(headers))]
    def line(cells):
        padded = (str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right))
        return "| " + " | ".join(padded) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2)) for w, r in zip(widths, right)) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _numeric(cell: str) -> bool:
    """Numbers, ratios and "-" (no value) align right, as in a spreadsheet."""
    text = str(cell).replace(",", "").removesuffix("x")
    try:
        return text == "-" or not math.isnan(float(text))
    except ValueError:
        return False


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def ceiling_section(ceiling: dict) -> str:
    rows = [[r["model"], r["precision"], str(r["batch"]), num(r["images_per_s"])] for r in ceiling["rows"]]
    prep = ceiling["preprocess_ms"]
    return "\n\n".join([
        f"### Ceiling: decode + preprocess + inference in one process ({ceiling['threads']} ONNX Runtime threads)",
        table(["model", "precision", "batch", "images/s"], rows),
        table(["one image", "decode + preprocess, ms (median)"],
              [["4000x3000 JPEG", num(prep["large_4000x3000"], 2)],
               ["224x224 photo (valid split)", num(prep["photo_224x224"], 2)]])])


def _load_row(setup: str, size: int, s: dict, web: str | None, worker: str | None) -> list[str]:
    return [setup, str(size), str(s["clients"]), str(s["requests"]), str(s["failures"]), str(s["resets"]),
            str(s["server_errors"]), num(s["images_per_s"]),
            *(num(s[k], 0) for k in LATENCY), web or "-", worker or "-"]


def rss(phase: dict, name: str) -> str:
    """'tree / largest process' peak MB."""
    peaks = phase["peak_rss_mb"]
    return f"{num(peaks[name], 0)} / {num(peaks[f'{name} process'], 0)}"


def load_section(baseline: dict, peer: list[dict], service: list[dict]) -> str:
    headers = ["setup", "images/request", "clients", "requests", "failures", "resets", "5xx", "images/s",
               "p50 ms", "p95 ms", "p99 ms", "web RSS MB", "worker RSS MB"]
    rows = [_load_row("baseline: 1 sync Flask process", 1, baseline, rss(baseline, "baseline"), None)]
    rows += [_load_row("peer: LitServe, batches of <= 16", 1, p, rss(p, "peer"), None) for p in peer]
    rows += [_load_row(f"service, {s['worker_processes']} worker process(es)", s["job_size"], s,
                       rss(s, "web"), rss(s, "worker")) for s in service]
    note = ("Latency: baseline and peer per request; service per job, submit to done (long poll). "
            "RSS: peak during the phase, summed over the process tree / of its largest process.")
    return "\n\n".join(["### Throughput and latency (same photos)", table(headers, rows), note])


def scaling_section(scaling: list[dict], mode: str) -> str:
    headers = ["worker processes", "images/s", "p50 ms", "p95 ms", "p99 ms", "failures", "worker RSS MB"]
    rows = [[str(s["worker_processes"]), num(s["images_per_s"]), *(num(s[k], 0) for k in LATENCY),
             str(s["failures"]), rss(s, "worker")] for s in scaling]
    return "\n\n".join([f"### Scaling: 16-image jobs, 16 clients ({mode})", table(headers, rows)])


def breakdown_section(breakdown: dict) -> str:
    rows = [[stage, num(ms, 1)] for stage, ms in breakdown["median_ms"].items()]
    note = ("Sequential jobs on an otherwise idle service, split at the job record's created_at and "
            "finished_at; the gap between the chunk's classification (from the worker taking it to its "
            "result written) and 'job stored -> result written' is the hand-off: the listing, and the "
            "wake of the worker process lingering on the list.")
    return "\n\n".join([f"### Where a 1-image job's time goes ({breakdown['jobs']} jobs, one at a time)",
                         table(["stage", "median ms"], rows), note])


def ratios_section(ratios: dict) -> str:
    rows = [[name, f"{value:.2f}x" if value is not None else "-"] for name, value in ratios.items()]
    return "\n\n".join(["### Ratios", table(["comparison", "ratio"], rows)])


def failures_section(results: dict) -> str:
    """Each phase that had failures, with its distinct errors: a failure is a result, not noise."""
    loads = [("baseline", results["baseline"])] + [(f"peer, {p['clients']} clients", p) for p in results["peer"]]
    loads += [(f"service, {s['job_size']}-image jobs, {s['clients']} clients, {s['worker_processes']} worker "
               f"process(es)", s) for s in results["service"] + results["scaling"]]
    lines = [f"- {name}: {s['failures']} failed; {'; '.join(s['errors'])}" for name, s in loads if s["failures"]]
    return "\n".join(["### Failures", "", *lines])


def header(results: dict) -> str:
    m, s = results["machine"], results["settings"]
    return "\n".join([
        f"## Benchmark{' (quick: smoke test, numbers not meaningful)' if s['quick'] else ''}",
        "",
        f"- machine: {m['cpu_count']} cores ({m['platform']}), load average at start {m['loadavg']}",
        f"- served model (baseline, peer and service): `{Path(s['model']).name}`",
        f"- {s['images_per_phase']} images per phase from the valid split; total run {results['duration_s']:.0f} s",
        f"- failures, all phases: {results['failures']} (connection resets {results['resets']}, "
        f"5xx {results['server_errors']})"])


def render(results: dict) -> str:
    sections = [header(results), ceiling_section(results["ceiling"]),
                load_section(results["baseline"], results["peer"], results["service"]), breakdown_section(results["breakdown"]),
                scaling_section(results["scaling"], results["settings"]["scaling_mode"]),
                ratios_section(results["ratios"])]
    if results["failures"]:
        sections.insert(1, failures_section(results))
    return "\n\n".join(sections) + "\n"


def write(results: dict, directory: Path = HERE) -> str:
    """Writes results-latest.md and results.json (beside this file unless told otherwise); returns the markdown.
    Not RESULTS.md: that file is the committed history, kept by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    text = render(results)
    (directory / "results-latest.md").write_text(text)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return text
