"""Batch client: classifies every image in a folder through the REST API, with a progress bar.

    python -m client.classify photos/ --url http://localhost:8000 --out results.csv

Sends the images in jobs of up to 64 (the default per-job limit), keeps a few jobs in flight so
the workers never wait on the client, long-polls each job, honours
Retry-After on 429/503, and writes one CSV row per image: file, status, top-3 labels and confidences.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import deque
from pathlib import Path

import requests
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def submit(session: requests.Session, url: str, paths: list[Path]) -> str:
    """Posts one job; waits and retries while the service asks to (429 rate limit, 503 busy)."""
    while True:
        files = [("file", (p.name, p.read_bytes())) for p in paths]
        response = session.post(f"{url}/api/v1/jobs", files=files, timeout=120)
        if response.status_code in (429, 503):
            time.sleep(float(response.headers.get("Retry-After", 5)))
            continue
        if response.status_code != 202:
            sys.exit(f"error {response.status_code}: {response.json()['error']['message']}")
        return url + response.json()["status_url"]


def wait(session: requests.Session, status_url: str) -> dict:
    while True:
        job = session.get(status_url, params={"wait": 30}, timeout=60).json()
        if job["status"] == "done":
            return job


def rows(paths: list[Path], job: dict) -> list[list]:
    out = []
    for path, result in zip(paths, job["results"]):
        top3 = [value for p in result["top3"] for value in (p["label"], f"{p['confidence']:.4f}")]
        error = result["error"]["message"] if result["error"] else ""
        out.append([str(path), result["status"], *top3, error])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--out", type=Path, default=Path("results.csv"))
    parser.add_argument("--api-key", default="")
    parser.add_argument("--job-size", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=4, help="jobs submitted ahead of the one awaited")
    args = parser.parse_args()
    paths = find_images(args.folder)
    session = requests.Session()
    session.headers["X-API-Key"] = args.api_key
    with args.out.open("w", newline="") as f, tqdm(total=len(paths), unit="image") as bar:
        writer = csv.writer(f)
        writer.writerow(["file", "status", "top1", "p1", "top2", "p2", "top3", "p3", "error"])
        in_flight: deque = deque()

        def finish_oldest() -> None:
            chunk, status_url = in_flight.popleft()
            writer.writerows(rows(chunk, wait(session, status_url)))
            bar.update(len(chunk))

        for start in range(0, len(paths), args.job_size):
            chunk = paths[start:start + args.job_size]
            in_flight.append((chunk, submit(session, args.url.rstrip("/"), chunk)))
            if len(in_flight) > args.in_flight:
                finish_oldest()
        while in_flight:
            finish_oldest()
    print(f"{len(paths)} images -> {args.out}")


if __name__ == "__main__":
    main()
