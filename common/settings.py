"""Every setting of the web app and the workers, read from the environment in this one place.

Tests and tools pass overrides instead; a deployment sets variables (see README, "Configuration");
`make run` also reads a .env file (`dotenv_exports`), whose template .env.example comes from here.
"""
from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

REPO = Path(__file__).resolve().parent.parent


def cores() -> int:
    """Cores this process may use: its CPU set, capped by a cgroup v2 CPU quota (`docker run
    --cpus`), so a container sizes itself by its share rather than by the host's core count."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or no quota
        pass
    return count


def setting(default, meaning: str):
    """A settings field with the one-line meaning that .env.example shows beside it."""
    return field(default=default, metadata={"meaning": meaning})


class SettingError(ValueError):
    """A variable whose value is not of its setting's type; the message names both."""


KINDS = {int: "a whole number (int)", float: "a number (float)", str: "text"}
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis for jobs, queue and rate limits; unset: `make run` "
                             "starts its own (redis://:password@host/0 and rediss:// work)")
    # The fused INT8 model: the most accurate on real-world photos and cheaper than any FP32 model
    # (README "What you get", ml/EXPERIMENTS.md).
    model_path: str = setting(str(REPO / "models" / "sports100-lite0-fused-int8.onnx"),
                              "the ONNX model; its card is the same path with .json")
    models_dir: str = setting("", "the model registry: every ONNX file here with its card is a model, named "
                              "name@version by its card; empty: the folder of MODEL_PATH")
    # The routing's starting point: once an operator changes it, Redis holds it (README "Models").
    model_active: str = setting("", "name@version of the model that takes the jobs; empty: MODEL_PATH's")
    model_canary: str = setting("", "name@version:percent: a candidate model that takes this share of jobs")
    model_shadow: str = setting("", "name@version:percent: a model that also classifies this share of jobs, "
                                "only to count how often it agrees (clients never see its answers)")
    worker_models: str = setting("", "comma-separated name@version of the models a worker serves, from the "
                                 "registry; empty: the model at MODEL_PATH")
    host: str = setting("127.0.0.1", "the address the web app (and a worker's metrics) listen on; 0.0.0.0 opens "
                        "it to other hosts")
    port: int = setting(8000, "the web app's port")
    web_processes: int = setting(0, "gunicorn processes; 0: half the cores, 1 to 4")
    web_connections: int = setting(1000, "connections one web process serves at once (gevent); it stops accepting beyond")
    web_idle_timeout_s: int = setting(5, "a request's line and headers must arrive within this; also the keep-alive timeout")
    web_body_timeout_s: int = setting(30, "a client silent this long while sending its body is dropped: 400 incomplete_body")
    web_body_deadline_s: int = setting(300, "a request body must arrive in full within this (a client trickling it is "
                                       "dropped): 408 upload_too_slow")
    # Limits on what one client may send (README "Limits" documents them for users).
    max_image_bytes: int = setting(10 * 1024 * 1024, "a larger file is refused: 413 file_too_large")
    max_request_bytes: int = setting(80 * 1024 * 1024, "a larger request is refused: 413 request_too_large")
    max_images_per_job: int = setting(64, "more files in one request are refused: 413 too_many_files")
    # A 24000x24000 decompression bomb is 576 MP.
    max_pixels: int = setting(64_000_000, "a larger image fails alone: image_too_large")
    # Pixels x bytes per pixel at the scale it decodes at: JPEG decodes at down to 1/8 of its size,
    # other formats in full, so this is a lower pixel limit for them (128 MB: 32 MP of RGB or RGBA).
    max_decode_mb: int = setting(128, "an image whose decoded pixels would take more fails alone: image_too_heavy")
    heavy_decode_mb: int = setting(16, "an image whose decoded pixels take more runs in a task of its own")
    max_queue_depth: int = setting(1000, "queued chunks beyond which submissions get 503 overloaded + Retry-After")
    # Waiting images live in Redis; refusing below its maxmemory keeps Redis's own OOM errors away.
    redis_memory_share: float = setting(0.8, "share of Redis's maxmemory in use beyond which submissions get "
                                        "503 overloaded + Retry-After")
    max_redis_mb: int = setting(2048, "for a Redis without maxmemory: memory in use (MB) beyond which submissions get "
                                "503 overloaded + Retry-After")
    rate_limit: str = setting("600/minute", "submissions per client address, counted in Redis; empty turns it off")
    api_key: str = setting("", "when set, submissions need the header X-API-Key with this value")
    max_long_polls_per_client: int = setting(20, "long polls (?wait=, /predict) one client address may hold at once; "
                                             "beyond: 429 too_many_long_polls")
    result_ttl_s: int = setting(24 * 3600, "a job and its results expire this long after their last write")
    chunk_size: int = setting(16, "images per Celery task, run as one batched inference")
    batch_images: int = setting(16, "images a worker process classifies in one inference, gathering the waiting "
                                "chunks of several jobs; 1: each chunk alone")
    batch_linger_s: float = setting(0.5, "how long a worker process that emptied the ready list waits on it for more "
                                    "before it stops; 0: it stops at once (each new chunk then costs a Celery wake-up)")
    visibility_timeout_s: int = setting(120, "a task held by a worker that vanished is handed out again after this")
    dispatch_grace_s: int = setting(30, "images a web process accepted but did not queue (it died) are queued "
                                    "by a worker after this")
    # Far above any wait the queue-depth limit allows, since a chunk run twice is wasted work.
    requeue_after_s: int = setting(600, "a queued chunk not finished after this (its task lost) is queued again")
    task_time_limit_s: int = setting(60, "a chunk running longer is killed and retried; after 3 starts its images fail")
    predict_timeout_s: float = setting(30.0, "how long POST /predict waits before answering 504 timeout")
    cors_origins: str = setting("", "comma-separated origins allowed to call the API; empty: same-origin only")
    worker_processes: int = setting(0, "worker processes per host; 0: one per core")
    worker_threads: int = setting(0, "ONNX Runtime threads per worker process; 0: cores / processes")
    webhook_secret: str = setting("", "shared secret that signs webhook calls (X-Sportclf-Signature); empty: "
                                  "a callback_url is refused with 422 webhooks_disabled")
    webhook_allow_private: int = setting(0, "1: callback URLs may point at private, loopback or link-local addresses "
                                         "(a private network, tests); 0: public addresses only (SSRF)")
    webhook_timeout_s: float = setting(10.0, "seconds one webhook attempt may take to connect and to be answered")
    webhook_attempts: int = setting(8, "attempts at a webhook call before its job records it failed")
    webhook_backoff_s: float = setting(2.0, "wait before a webhook's second attempt; doubles after each failure, "
                                       "at most 60 s")
    worker_memory_mb: int = setting(1024, "address space a worker process may add after loading the model; "
                                    "an image that needs more fails alone: image_too_heavy; 0: no ceiling")
    log_format: str = setting("text", "log lines as text (for a terminal) or json (one JSON object a line, for a "
                              "log collector)")
    worker_metrics_port: int = setting(9808, "the port where a worker serves its Prometheus metrics (its pool "
                                       "processes' included) on HOST; 0 turns it off")
    metrics_token: str = setting("", "when set, GET /metrics and the worker's metrics need the header "
                                 "Authorization: Bearer <this value>")

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise SettingError(f"LOG_FORMAT={self.log_format!r} is not valid: expected one of {', '.join(LOG_FORMATS)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Each field can be set by its upper-case name, e.g. REDIS_URL or MAX_IMAGES_PER_JOB."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.name.upper())
            if raw is not None and (raw != "" or type(f.default) is str):  # "" means unset, except for text
                values[f.name] = parse(f, raw)
        return cls(**(values | overrides))

    @property
    def processes(self) -> int:
        """Worker processes this host runs."""
        return self.worker_processes or cores()

    @property
    def model_card_path(self) -> Path:
        """The card lives beside its model: same name, .json."""
        return Path(self.model_path).with_suffix(".json")


def parse(f: Field, raw: str) -> int | float | str:
    kind = type(f.default)
    try:
        return kind(raw)
    except ValueError:
        raise SettingError(f"{f.name.upper()}={raw!r} is not valid: expected {KINDS[kind]}, "
                           f"such as the default {f.default!r}") from None


def dotenv_exports(env_file: Path, environ: Mapping[str, str]) -> str:
    """Shell `export` lines for the settings in `env_file` that `environ` does not set: a real
    variable wins over the file. Checks every setting first, so a bad value stops here."""
    from_file = {name: value for name, value in dotenv_values(env_file).items()
                 if value is not None and name not in environ}
    for name in from_file:
        if not name.isidentifier():
            raise SettingError(f"{env_file}: {name!r} is not a variable name")
    Settings.from_env({**from_file, **environ})
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in from_file.items())


def env_example() -> str:
    """The text of .env.example: every setting, commented out at its default, under its meaning."""
    lines = ["# Settings for `make run`: copy this file to .env and uncomment what you change.",
             "# A variable set in the environment wins over .env. Shown: each setting's default."]
    for f in fields(Settings):
        default = str(f.default).removeprefix(f"{REPO}/")  # paths in the repo: relative to it
        lines += ["", f"# {f.metadata['meaning']}", f"# {f.name.upper()}={default}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    """`python -m common.settings [ENV_FILE]`, for bin/run: prints the exports, or says in one
    line which setting is wrong and exits 2."""
    env_file = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".env")
    try:
        print(dotenv_exports(env_file, os.environ), end="")
    except SettingError as exc:
        print(f"bad setting: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
