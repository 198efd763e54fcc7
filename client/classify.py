"""Batch client: classifies every image in a folder through the REST API, with a progress bar.

    python -m client.classify photos/ --url http://localhost:8000 --out results.csv

Asks the service for its limits and packs the images into jobs that fit them (files and bytes per
request; a file over the per-image limit fails here, alone), keeps a few jobs in flight so the
workers never wait on the client, long-polls each job, and waits as told while the service is busy
(429/503 with Retry-After) or unreachable. Writes one CSV row per image: file, status, top-3 labels
and confidences, error. A job the service refuses, forgets or never finishes fails its own rows;
the run goes on.
"""
from __future__ import annotations

import argparse
import csv
import time
from collections import deque
from pathlib import Path
from typing import Callable

import requests
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
COLUMNS = ["file", "status", "top1", "p1", "top2", "p2", "top3", "p3", "error"]
PART_OVERHEAD = 1024  # bytes of multipart headers per file, with room for a long name
WAIT_STATUSES = {429, 502, 503, 504}  # busy or restarting: worth asking again
JOB_DEADLINE_S = 600  # a job not done this long after it was sent fails its rows
MAX_PAUSE_S = 30


class Refused(Exception):
    """A job that ended without results; the message says why."""


def find_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def plan_jobs(paths: list[Path], limits: dict) -> tuple[list[list[Path]], list[tuple[Path, str]]]:
    """Jobs that each fit one request, in folder order, and the files too large to send at all."""
    jobs, refused, job, job_bytes = [], [], [], 0
    for path in paths:
        try:
            size = path.stat().st_size
        except OSError as exc:  # gone or unreadable since the folder was listed
            refused.append((path, f"could not read the file: {exc.strerror or exc}"))
            continue
        if size > limits["max_image_bytes"]:
            refused.append((path, f"{size:,} bytes is over the limit of {limits['max_image_bytes']:,} bytes per image"))
            continue
        cost = size + PART_OVERHEAD
        if job and (len(job) == limits["max_images_per_job"] or job_bytes + cost > limits["max_request_bytes"]):
            jobs.append(job)
            job, job_bytes = [], 0
        job.append(path)
        job_bytes += cost
    return jobs + [job] if job else jobs, refused


def ask(send: Callable[[], requests.Response], deadline: float) -> requests.Response | None:
    """The service's answer, asking again while it is busy or unreachable; None past `deadline`."""
    pause = 1.0
    while True:
        try:
            response = send()
            if response.status_code not in WAIT_STATUSES:
                return response
            retry_after = response.headers.get("Retry-After", "")
            pause = max(1.0, float(retry_after)) if retry_after.isdigit() else pause
        except requests.RequestException:
            pass
        if time.monotonic() + pause > deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE_S)


def error_message(response: requests.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def submit(session: requests.Session, url: str, paths: list[Path], deadline: float) -> str:
    """Posts one job: its status URL, or Refused saying why it was not accepted."""
    try:
        files = [("file", (p.name, p.read_bytes())) for p in paths]
    except OSError as exc:
        raise Refused(f"could not read {exc.filename}: {exc.strerror or exc}") from None
    response = ask(lambda: session.post(f"{url}/api/v1/jobs", files=files, timeout=120), deadline)
    if response is None:
        raise Refused("the service did not accept the job in time")
    if response.status_code != 202:
        raise Refused(f"refused (HTTP {response.status_code}): {error_message(response)}")
    return url + answer(response)["status_url"]


def wait(session: requests.Session, status_url: str, deadline: float) -> dict:
    """Long-polls the job until it is done; Refused if it is gone or not done by `deadline`."""
    while (remaining := deadline - time.monotonic()) > 0:
        response = ask(lambda: session.get(status_url, params={"wait": min(30, remaining)}, timeout=60), deadline)
        if response is None:
            break
        if response.status_code != 200:
            raise Refused(f"the job was lost (HTTP {response.status_code}): {error_message(response)}")
        job = answer(response)
        if job["status"] == "done":
            return job
    raise Refused(f"no result within {JOB_DEADLINE_S} s")


def answer(response: requests.Response) -> dict:
    """The JSON body of a success; Refused if it is not what the API promises (a proxy's page, say)."""
    try:
        body = response.json()
        if isinstance(body, dict) and ("status_url" in body or "results" in body):
            return body
    except ValueError:
        pass
    raise Refused(f"an answer that is not the API's (HTTP {response.status_code})")


def result_rows(paths: list[Path], job: dict) -> list[list[str]]:
    out = []
    for path, result in zip(paths, job["results"]):
        top3 = [value for p in result["top3"] for value in (p["label"], f"{p['confidence']:.4f}")]
        error = result["error"]["message"] if result["error"] else ""
        out.append([str(path), result["status"], *top3, *[""] * (6 - len(top3)), error])
    return out


def failed_row(path: Path, message: str) -> list[str]:
    return [str(path), "failed", *[""] * 6, message]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--out", type=Path, default=Path("results.csv"))
    parser.add_argument("--api-key", default="")
    parser.add_argument("--in-flight", type=int, default=4, help="jobs submitted ahead of the one awaited")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    session = requests.Session()
    session.headers["X-API-Key"] = args.api_key
    limits = session.get(f"{url}/api/v1/limits", timeout=30)
    limits.raise_for_status()
    paths = find_images(args.folder)
    jobs, refused = plan_jobs(paths, limits.json())
    with args.out.open("w", newline="") as f, tqdm(total=len(paths), unit="image") as bar:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(failed_row(path, message) for path, message in refused)
        bar.update(len(refused))
        in_flight: deque = deque()

        def finish_oldest() -> None:
            job_paths, status_url, deadline = in_flight.popleft()
            try:
                writer.writerows(result_rows(job_paths, wait(session, status_url, deadline)))
            except Refused as why:
                writer.writerows(failed_row(path, str(why)) for path in job_paths)
            bar.update(len(job_paths))

        for job_paths in jobs:
            deadline = time.monotonic() + JOB_DEADLINE_S
            try:
                in_flight.append((job_paths, submit(session, url, job_paths, deadline), deadline))
            except Refused as why:
                writer.writerows(failed_row(path, str(why)) for path in job_paths)
                bar.update(len(job_paths))
            if len(in_flight) > args.in_flight:
                finish_oldest()
        while in_flight:
            finish_oldest()
    print(f"{len(paths)} images -> {args.out}")


if __name__ == "__main__":
    main()
