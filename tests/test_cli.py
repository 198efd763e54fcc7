"""The client as users run it: the installed `sportclf` console script (a subprocess of the venv's
.venv/bin/sportclf) and the Python API, against real servers whose limits force several jobs."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from redis import Redis

from common.jobs import JobStore
from harness import TIGHT_LIMITS, RedisServer, free_port, serve, valid_images, wait_for
from sportclf import Client, ServiceError
from sportclf.client import PART_OVERHEAD, plan_jobs
from sportclf.files import find_images
from sportclf.output import COLUMNS
from webapp import create_app

SPORTCLF = Path(sys.executable).parent / "sportclf"  # what `make run` / `pip install .` put in the venv
UNREACHABLE = f"http://127.0.0.1:{free_port()}"


def sportclf(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    assert SPORTCLF.exists(), f"{SPORTCLF} is missing: install the client with `pip install -e .`"
    return subprocess.run([str(SPORTCLF), *map(str, args)], cwd=cwd, env=os.environ | (env or {}),
                          capture_output=True, text=True, timeout=300)


def photo_folder(folder: Path, count: int, start: int = 30) -> list[tuple[Path, str]]:
    """`count` real photos copied into `folder`: (copy, true label)."""
    folder.mkdir(parents=True)
    photos = []
    for i, (path, label) in enumerate(valid_images(count, start=start)):
        copy = folder / f"{i:02d}-{path.name}"
        copy.write_bytes(path.read_bytes())
        photos.append((copy, label))
    return photos


def read_csv(path: Path) -> dict[str, dict]:
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == COLUMNS and all(len(row) == len(COLUMNS) for row in rows)
    by_name = {Path(row[0]).name: dict(zip(COLUMNS, row)) for row in rows}
    assert len(by_name) == len(rows), "a file is listed twice"
    return by_name


@pytest.fixture(scope="module")
def display_names(tight_server) -> dict[str, str]:
    return requests.get(f"{tight_server}/api/v1/classes", timeout=30).json()["display_names"]


@pytest.fixture
def idle_server(settings, tmp_path):
    """The app with TIGHT_LIMITS on a Redis of its own that no worker reads: its jobs wait forever."""
    redis = RedisServer(tmp_path / "idle-redis").start()
    app = create_app(dataclasses.replace(settings, redis_url=redis.url, **TIGHT_LIMITS))
    for url in serve(app):
        yield url, app, Redis.from_url(redis.url)
    redis.stop()


def test_help_shows_every_option_with_its_default(tmp_path):
    top = sportclf("--help", cwd=tmp_path)
    assert top.returncode == 0 and all(name in top.stdout for name in ("classify", "classes", "health"))
    run = sportclf("classify", "--help", cwd=tmp_path)
    assert run.returncode == 0
    for text in ("--server URL", "default: http://localhost:8000", "SPORTCLF_SERVER", "--api-key KEY",
                 "SPORTCLF_API_KEY", "--out FILE", "results.csv", "[csv|jsonl]", "--resume", "--in-flight"):
        assert text in run.stdout, text


def test_a_folder_becomes_csv_rows_with_display_names_and_failures_exit_1(tight_server, display_names, tmp_path):
    photos = photo_folder(tmp_path / "photos", 8)
    (tmp_path / "photos" / "notes.jpg").write_text("not a photo")
    (tmp_path / "photos" / "huge.jpg").write_bytes(os.urandom(TIGHT_LIMITS["max_image_bytes"] + 1))
    run = sportclf("classify", "photos", "--server", tight_server, cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # two images failed
    rows = read_csv(tmp_path / "results.csv")  # the default --out
    assert len(rows) == len(photos) + 2
    assert rows["huge.jpg"]["status"] == "failed" and "over the limit" in rows["huge.jpg"]["error"]
    assert rows["notes.jpg"]["status"] == "failed" and "not a readable image" in rows["notes.jpg"]["error"]
    classified = [rows[path.name] for path, _ in photos]
    assert all(row["status"] == "done" and not row["error"] for row in classified)
    assert all(row[top] in display_names.values() for row in classified for top in ("top1", "top2", "top3"))
    assert all(row["confident"] in ("yes", "no") for row in classified)
    correct = sum(row["top1"] == display_names[label] for row, (_, label) in zip(classified, photos))
    assert correct >= 6, f"only {correct}/8 photos classified correctly"


def test_a_glob_becomes_json_lines_and_all_done_exits_0(tight_server, display_names, tmp_path):
    photos = photo_folder(tmp_path / "photos", 5)
    (tmp_path / "photos" / "skipped.png").write_bytes(photos[0][0].read_bytes())  # the pattern leaves it out
    run = sportclf("classify", str(tmp_path / "photos" / "*.jpg"), "--server", tight_server, "--out", "out.jsonl",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [Path(line["file"]).name for line in lines] == [path.name for path, _ in photos]
    for line in lines:
        assert line["status"] == "done" and line["error"] is None and len(line["top3"]) == 3
        assert all(p["display_name"] == display_names[p["label"]] for p in line["top3"])
        assert 0 < line["top3"][0]["confidence"] <= 1 and isinstance(line["confident"], bool)


def test_resume_sends_only_the_files_not_in_the_output(tight_server, tmp_path):
    photos = photo_folder(tmp_path / "photos", 12)
    began = time.monotonic()
    assert sportclf("classify", "photos", "--server", tight_server, cwd=tmp_path).returncode == 0
    full_s = time.monotonic() - began
    out = tmp_path / "results.csv"
    complete = out.read_text()
    kept = "".join(complete.splitlines(keepends=True)[:6])  # the header and 5 rows, as if cut short
    out.write_text(kept + "photos/05-torn")  # and a last line torn by a crash
    began = time.monotonic()
    run = sportclf("classify", "photos", "--server", tight_server, "--resume", cwd=tmp_path)
    resume_s = time.monotonic() - began
    assert run.returncode == 0, run.stderr
    resumed = out.read_text()
    assert resumed.startswith(kept)  # appended, never rewritten
    assert read_csv(out).keys() == {path.name for path, _ in photos}  # each file once
    again = sportclf("classify", "photos", "--server", tight_server, "--resume", cwd=tmp_path)
    assert again.returncode == 0 and out.read_text() == resumed  # nothing left to do
    print(f"\nfull run of 12 images: {full_s:.2f} s; resume of the 7 missing: {resume_s:.2f} s")


def test_resume_refuses_an_output_that_is_not_its_own(tight_server, tmp_path):
    photo_folder(tmp_path / "photos", 1)
    (tmp_path / "notes.csv").write_text("name,age\nann,3\nbob,4")  # no newline at the end: not to be cut
    run = sportclf("classify", "photos", "--server", tight_server, "--out", "notes.csv", "--resume", cwd=tmp_path)
    assert run.returncode == 2 and "not CSV output of sportclf" in run.stderr
    assert (tmp_path / "notes.csv").read_text() == "name,age\nann,3\nbob,4"


def test_a_missing_folder_a_service_that_is_down_or_an_unwritable_output_exits_2(tight_server, tmp_path):
    missing = sportclf("classify", "no-such-folder", "--server", tight_server, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == "Error: no such file or folder: no-such-folder"
    photo_folder(tmp_path / "photos", 1)
    (tmp_path / "results.csv").write_text("earlier results\n")
    down = sportclf("classify", "photos", "--server", UNREACHABLE, cwd=tmp_path)
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert "cannot reach the service" in down.stderr and UNREACHABLE in down.stderr
    assert (tmp_path / "results.csv").read_text() == "earlier results\n"  # not wiped by a run that never began
    address = tight_server.removeprefix("http://")  # host:port, as people type it
    schemeless = sportclf("classify", "photos", "--server", address, cwd=tmp_path)
    expected = (f"Error: --server needs a URL that starts with http:// or https:// and names a host, "
                f"e.g. http://{address} (got {address})")
    assert schemeless.returncode == 2 and schemeless.stderr.strip() == expected
    hostless = sportclf("classify", "photos", "--server", "http://", cwd=tmp_path)
    assert hostless.returncode == 2 and hostless.stderr.strip().endswith("names a host (got http://)"), hostless.stderr
    unwritable = sportclf("classify", "photos", "--server", tight_server, "--out", "no-such-dir/r.csv", cwd=tmp_path)
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("Error: cannot write no-such-dir/r.csv")


def test_an_api_key_is_sent_when_given(settings, worker, tmp_path):
    app = create_app(dataclasses.replace(settings, api_key="k3y"))
    photo_folder(tmp_path / "photos", 1)
    for url in serve(app):
        refused = sportclf("classify", "photos", "--server", url, cwd=tmp_path)
        assert refused.returncode == 2 and "API key" in refused.stderr
        accepted = sportclf("classify", "photos", "--server", url, cwd=tmp_path, env={"SPORTCLF_API_KEY": "k3y"})
        assert accepted.returncode == 0, accepted.stderr


def as_in_a_terminal() -> None:
    """Ctrl-C's SIGINT at its default, as in a terminal: a test run started as a background job
    (`make test &` from a script) hands its children SIGINT ignored, and the CLI would never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_cancels_its_jobs_keeps_what_it_wrote_and_resume_finishes(idle_server, tight_server, tmp_path):
    url, app, redis = idle_server
    photos = photo_folder(tmp_path / "photos", 7)
    (tmp_path / "photos" / "huge.jpg").write_bytes(os.urandom(TIGHT_LIMITS["max_image_bytes"] + 1))
    jobs, _ = plan_jobs(find_images([tmp_path / "photos"]), TIGHT_LIMITS)
    assert 1 < len(jobs) <= 5  # all in flight at once (--in-flight 4, plus the one awaited)
    cli = subprocess.Popen([SPORTCLF, "classify", "photos", "--server", url], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    keys = wait_for(lambda: len(ids := job_keys(redis)) == len(jobs) and ids, 120, "the CLI's jobs in Redis")
    cli.send_signal(signal.SIGINT)
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    rows = read_csv(tmp_path / "results.csv")
    assert rows.keys() == {"huge.jpg"}  # known before any job: written; the waiting images: not
    if service_cancels(app):
        for key in keys:
            job = requests.get(f"{url}/api/v1/jobs/{key.split(':', 1)[1]}", timeout=30).json()
            assert job["status"] == "done" and {r["status"] for r in job["results"]} == {"cancelled"}
    else:  # a service without DELETE: the user is told, and nothing crashes
        assert f"could not cancel {len(jobs)} of {len(jobs)} unfinished job(s)" in stderr
    finish = sportclf("classify", "photos", "--server", tight_server, "--resume", cwd=tmp_path)
    assert finish.returncode == 0, finish.stderr
    rows = read_csv(tmp_path / "results.csv")
    assert rows.keys() == {"huge.jpg"} | {path.name for path, _ in photos}
    assert all(rows[path.name]["status"] == "done" for path, _ in photos)


def job_keys(redis: Redis) -> list[str]:
    return [key.decode() for key in redis.scan_iter(JobStore.key("*")) if redis.type(key) == b"hash"]


def service_cancels(app) -> bool:
    """Whether this service has DELETE /api/v1/jobs/<id> (an older one answers 405)."""
    return any("DELETE" in rule.methods for rule in app.url_map.iter_rules() if rule.rule == "/api/v1/jobs/<job_id>")


def test_classes_and_health(tight_server, idle_server, display_names, tmp_path):
    classes = sportclf("classes", "--server", tight_server, cwd=tmp_path)
    assert classes.returncode == 0 and classes.stdout.splitlines() == list(display_names.values())
    assert "Barrel Racing" in classes.stdout.splitlines()
    ready = sportclf("health", "--server", tight_server, cwd=tmp_path)
    assert ready.returncode == 0 and ready.stdout.startswith("ready")
    no_worker = sportclf("health", "--server", idle_server[0], cwd=tmp_path)
    assert no_worker.returncode == 1 and no_worker.stdout.startswith("not ready")
    down = sportclf("health", "--server", UNREACHABLE, cwd=tmp_path)
    assert down.returncode == 2 and "cannot reach" in down.stderr


def test_the_python_api_yields_one_result_per_image(tight_server, display_names, tmp_path):
    photos = photo_folder(tmp_path / "photos", 4)
    (tmp_path / "photos" / "notes.jpg").write_text("not a photo")
    client = Client(tight_server)
    results = list(client.classify([tmp_path / "photos"]))
    assert [r.path.name for r in results] == sorted([path.name for path, _ in photos] + ["notes.jpg"])
    by_name = {r.path.name: r for r in results}
    assert by_name["notes.jpg"].status == "failed" and by_name["notes.jpg"].error.code == "not_an_image"
    for path, label in photos:
        result = by_name[path.name]
        assert result.status == "done" and result.error is None and len(result.top3) == 3
        assert result.top3[0].display_name == display_names[result.top3[0].label]
    assert client.classes() == display_names
    with pytest.raises(FileNotFoundError):
        client.classify([tmp_path / "nowhere"])
    with pytest.raises(ServiceError, match="cannot reach"):
        Client(UNREACHABLE).classify([tmp_path / "photos"])


def test_a_job_that_never_finishes_fails_at_the_deadline(idle_server, tmp_path):
    """Its images wait with no worker: the long poll keeps answering 'queued', and the client must
    still give up at its deadline rather than poll forever."""
    photo_folder(tmp_path / "photos", 1)
    began = time.monotonic()
    [result] = Client(idle_server[0], job_timeout_s=2).classify([tmp_path / "photos"])
    assert result.status == "failed" and result.error.code == "no_result"
    assert time.monotonic() - began < 60  # a hang, not a slow machine, would break this


def test_jobs_fit_the_limits_in_files_and_bytes(tmp_path):
    sizes = [30_000, 30_000, 30_000, 10, 10, 10, 10, 70_000, 50_000]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(b"x" * size)
    jobs, refused = plan_jobs(paths, TIGHT_LIMITS)
    assert [r.path.name for r in refused] == ["7.jpg"] and "over the limit" in refused[0].error.message
    assert [[p.name for p in job] for job in jobs] == [["0.jpg", "1.jpg", "2.jpg"], ["3.jpg", "4.jpg", "5.jpg"],
                                                        ["6.jpg", "8.jpg"]]
    for job in jobs:
        assert sum(p.stat().st_size + PART_OVERHEAD for p in job) <= TIGHT_LIMITS["max_request_bytes"]
    _, refused = plan_jobs([tmp_path / "gone.jpg"], TIGHT_LIMITS)  # listed, then deleted
    assert refused[0].error.code == "unreadable_file"


def test_the_client_loads_nothing_of_the_service():
    """`pip install .` brings only click, requests and tqdm: the client must not need more."""
    probe = "import sportclf, sportclf.cli, sys; print(' '.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert "sportclf.cli" in loaded
    service = {"flask", "celery", "redis", "numpy", "PIL", "onnxruntime", "torch", "common", "webapp", "worker"}
    assert not service & set(loaded)
