"""The Python API: `Client(url).classify(paths)` yields one `Result` per image.

It asks the service for its limits and packs the images into jobs that fit them (files and bytes per
request; a file over the per-image limit fails here, alone), keeps a few jobs in flight so the
workers never wait on the client, long-polls each job, and waits as told while the service is busy
(429/503 with Retry-After) or unreachable. A job the service refuses, forgets or never finishes
fails its own images; the rest go on. Stopping early (an exception, Ctrl-C, closing the iterator)
cancels the jobs not yet finished.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import requests

from sportclf.files import find_images
from sportclf.results import Result, failed, from_job
from sportclf.transport import Refused, ServiceError, answer, ask, error_message, reason

PART_OVERHEAD = 1024  # bytes of multipart headers per file, with room for a long name
log = logging.getLogger(__name__)


@dataclass
class _Job:
    paths: list[Path]
    job_id: str
    status_url: str
    deadline: float


class Client:
    """A Sport Image Classifier service at `url`; `api_key` is sent as X-API-Key when given."""

    def __init__(self, url: str = "http://localhost:8000", api_key: str | None = None, *,
                 in_flight: int = 4, job_timeout_s: float = 600):
        self.url, self.in_flight, self.job_timeout_s = url.rstrip("/"), in_flight, job_timeout_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["X-API-Key"] = api_key

    def limits(self) -> dict:
        """What one request may carry: max_images_per_job, max_image_bytes, max_request_bytes, ..."""
        return self._get_json("/api/v1/limits")

    def classes(self) -> dict[str, str]:
        """Each class label the model knows, with its display name."""
        return self._get_json("/api/v1/classes")["display_names"]

    def ready(self) -> dict:
        """The service's readiness: status ("ready" or "not_ready"), redis, workers, model, problems."""
        return self._get_json("/ready", also_ok=(503,))

    def models(self) -> dict:
        """The routing in force and every model the service has: share of jobs, workers, figures."""
        return self._get_json("/api/v1/models")

    def change_routing(self, changes: dict) -> dict:
        """Changes which models take the jobs (needs the API key); `changes` as PATCH
        /api/v1/models/routing takes them. The routing as it then stands."""
        try:
            response = self.session.patch(self.url + "/api/v1/models/routing", json=changes, timeout=30)
        except requests.RequestException as exc:
            raise ServiceError(f"cannot reach the service at {self.url}: {reason(exc)}") from None
        if not response.ok:
            raise ServiceError(f"the routing was not changed: {error_message(response)}")
        return response.json()

    def classify(self, paths: Iterable[str | Path]) -> Iterator[Result]:
        """Results for the images in `paths` (files, folders searched for images, glob patterns), in
        order, as their jobs finish. Checks the paths (FileNotFoundError) and the service
        (ServiceError) before returning; close the iterator to cancel what is left."""
        jobs, refused = plan_jobs(find_images(paths), self.limits())
        return self._run(jobs, refused)

    def cancel(self, job_id: str) -> bool:
        """Asks the service to cancel a job: False if it did not (a service without cancel answers
        405, a job already gone 404) or did not answer."""
        try:
            response = self.session.delete(f"{self.url}/api/v1/jobs/{job_id}", timeout=10)
        except requests.RequestException as exc:
            log.debug("cancelling job %s: %s", job_id, reason(exc))
            return False
        log.debug("cancelling job %s: HTTP %s", job_id, response.status_code)
        return response.ok

    def _run(self, jobs: list[list[Path]], refused: list[Result]) -> Iterator[Result]:
        yield from refused
        in_flight: deque[_Job] = deque()
        try:
            for paths in jobs:
                try:
                    in_flight.append(self._submit(paths))
                except Refused as why:
                    yield from (failed(path, why.code, str(why)) for path in paths)
                if len(in_flight) > self.in_flight:
                    yield from self._finish(in_flight)
            while in_flight:
                yield from self._finish(in_flight)
        finally:  # stopped early: the service need not classify what nobody will read
            self._cancel_all(in_flight)

    def _cancel_all(self, jobs: Iterable[_Job]) -> None:
        outcomes = [(self.cancel(job.job_id), len(job.paths)) for job in jobs]
        if not outcomes:
            return
        kept = [images for cancelled, images in outcomes if not cancelled]
        if kept:
            log.warning("could not cancel %d of %d unfinished job(s): the service may still classify their %d image(s)",
                        len(kept), len(outcomes), sum(kept))
        else:
            log.info("cancelled %d unfinished job(s) (%d images)", len(outcomes), sum(images for _, images in outcomes))

    def _finish(self, in_flight: deque[_Job]) -> list[Result]:
        """Waits for the oldest job; it leaves `in_flight` only once it is over, so an interrupted
        wait still cancels it."""
        job = in_flight[0]
        try:
            results = from_job(job.paths, self._wait(job))
        except Refused as why:
            results = [failed(path, why.code, str(why)) for path in job.paths]
        in_flight.popleft()
        return results

    def _submit(self, paths: list[Path]) -> _Job:
        try:
            files = [("file", (p.name, p.read_bytes())) for p in paths]
        except OSError as exc:
            raise Refused("unreadable_file", f"could not read {exc.filename}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + self.job_timeout_s
        response = ask(partial(self.session.post, f"{self.url}/api/v1/jobs", files=files, timeout=120), deadline)
        if response is None:
            raise Refused("not_accepted", "the service did not accept the job in time")
        if response.status_code == 401:  # every job would be refused alike
            raise ServiceError(f"the service needs an API key: {error_message(response)}")
        if response.status_code != 202:
            raise Refused("job_refused", f"refused (HTTP {response.status_code}): {error_message(response)}")
        body = answer(response)
        return _Job(paths, body["job_id"], self.url + body["status_url"], deadline)

    def _wait(self, job: _Job) -> dict:
        """Long-polls the job until it is done; Refused if it is gone or not done by its deadline."""
        while (remaining := job.deadline - time.monotonic()) > 0:
            response = ask(partial(self.session.get, job.status_url, params={"wait": min(30, remaining)}, timeout=60),
                           job.deadline)
            if response is None:
                break
            if response.status_code != 200:
                raise Refused("job_lost", f"the job was lost (HTTP {response.status_code}): {error_message(response)}")
            body = answer(response)
            if body["status"] == "done":
                return body
        raise Refused("no_result", f"no result within {self.job_timeout_s:g} s")

    def _get_json(self, path: str, also_ok: tuple[int, ...] = ()) -> dict:
        try:
            response = self.session.get(self.url + path, timeout=30)
        except requests.RequestException as exc:
            raise ServiceError(f"cannot reach the service at {self.url}: {reason(exc)}") from None
        try:
            if response.ok or response.status_code in also_ok:
                return response.json()
        except ValueError:
            pass
        raise ServiceError(f"{self.url}{path} answered HTTP {response.status_code}, not the service's JSON")


def plan_jobs(paths: list[Path], limits: dict) -> tuple[list[list[Path]], list[Result]]:
    """Jobs that each fit one request, in the given order, and the failures of files that cannot be sent."""
    jobs, refused, job, job_bytes = [], [], [], 0
    for path in paths:
        try:
            size = path.stat().st_size
        except OSError as exc:  # gone or unreadable since it was listed
            refused.append(failed(path, "unreadable_file", f"could not read the file: {exc.strerror or exc}"))
            continue
        if size > (limit := limits["max_image_bytes"]):
            message = f"{size:,} bytes is over the limit of {limit:,} bytes per image"
            refused.append(failed(path, "file_too_large", message))
            continue
        cost = size + PART_OVERHEAD
        if job and (len(job) == limits["max_images_per_job"] or job_bytes + cost > limits["max_request_bytes"]):
            jobs.append(job)
            job, job_bytes = [], 0
        job.append(path)
        job_bytes += cost
    return jobs + [job] if job else jobs, refused
