"""The batch client as users run it (`python -m client.classify`), against a real server whose
limits force it to split the folder into several jobs."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests
from redis import Redis

from client.classify import COLUMNS, PART_OVERHEAD, Refused, plan_jobs, wait
from common.jobs import JobStore
from common.settings import REPO
from harness import valid_images


def test_jobs_fit_the_limits_in_files_and_bytes(tmp_path, tight_limits):
    sizes = [30_000, 30_000, 30_000, 10, 10, 10, 10, 70_000, 50_000]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(b"x" * size)
    jobs, refused = plan_jobs(paths, tight_limits)
    assert [p.name for p, _ in refused] == ["7.jpg"] and "over the limit" in refused[0][1]
    assert [[p.name for p in job] for job in jobs] == [["0.jpg", "1.jpg", "2.jpg"], ["3.jpg", "4.jpg", "5.jpg"],
                                                        ["6.jpg", "8.jpg"]]
    for job in jobs:
        assert sum(p.stat().st_size + PART_OVERHEAD for p in job) <= tight_limits["max_request_bytes"]
    _, refused = plan_jobs([tmp_path / "gone.jpg"], tight_limits)  # listed, then deleted
    assert "could not read" in refused[0][1]


def test_a_job_that_never_finishes_fails_at_the_deadline(tight_server, settings):
    """A job whose images wait with no task behind them: the long poll keeps answering 200
    'queued', and the client must still give up at its deadline rather than poll forever."""
    job_id = str(uuid.uuid4())
    JobStore(Redis.from_url(settings.redis_url), ttl_s=60).create(job_id, ["a.jpg"], {0: b"bytes"}, {})
    began = time.monotonic()
    with pytest.raises(Refused, match="no result"):
        wait(requests.Session(), f"{tight_server}/api/v1/jobs/{job_id}", deadline=began + 2)
    assert time.monotonic() - began < 60  # a hang, not a slow machine, would break this


def test_a_folder_is_classified_into_one_csv_row_per_file(tight_server, tight_limits, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    photos = valid_images(8, start=30)
    for i, (path, _) in enumerate(photos):
        (folder / f"{i:02d}-{path.name}").write_bytes(path.read_bytes())
    (folder / "notes.jpg").write_text("not a photo")
    (folder / "huge.jpg").write_bytes(os.urandom(tight_limits["max_image_bytes"] + 1))
    out = tmp_path / "results.csv"
    run = subprocess.run([sys.executable, "-m", "client.classify", str(folder), "--url", tight_server, "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with out.open() as f:
        header, *rows = list(csv.reader(f))
    assert header == COLUMNS
    assert all(len(row) == len(COLUMNS) for row in rows)
    by_name = {os.path.basename(row[0]): dict(zip(COLUMNS, row)) for row in rows}
    assert len(by_name) == len(photos) + 2
    assert by_name["huge.jpg"]["status"] == "failed" and "over the limit" in by_name["huge.jpg"]["error"]
    assert by_name["notes.jpg"]["status"] == "failed" and "not a readable image" in by_name["notes.jpg"]["error"]
    labels = [by_name[f"{i:02d}-{path.name}"] for i, (path, _) in enumerate(photos)]
    assert all(row["status"] == "done" and row["top3"] and not row["error"] for row in labels)
    correct = sum(row["top1"] == label for row, (_, label) in zip(labels, photos))
    assert correct >= 6, f"only {correct}/8 photos classified correctly"
