"""Every setting of the web app and the workers, read from the environment in this one place.

Tests and tools pass overrides instead; a deployment sets variables (see README, "Configuration").
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # INT8, as ml/export.py's rule chooses it (README "Model" has both models' figures).
    model_path: str = str(REPO / "models" / "sports100-lite0-int8.onnx")
    # Limits on what one client may send (README "Limits" documents them for users).
    max_image_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 80 * 1024 * 1024
    max_images_per_job: int = 64
    max_pixels: int = 64_000_000  # a 24000x24000 decompression bomb is 576 MP
    max_queue_depth: int = 1000  # queued tasks (chunks) beyond which submissions get 503 + Retry-After
    max_redis_mb: int = 2048  # Redis memory in use beyond which submissions get 503 (waiting images live there)
    rate_limit: str = "600/minute"  # submissions per client address, counted in Redis; "" turns it off
    api_key: str = ""  # when set, submissions need the header X-API-Key with this value
    result_ttl_s: int = 24 * 3600  # a job and its results expire this long after they are written
    chunk_size: int = 16  # images per Celery task, run as one batched inference
    # A task taken by a worker that vanished (SIGKILL, lost host) is handed out again after this.
    visibility_timeout_s: int = 120
    # Chunks of a job whose web process died before queueing them are queued by a worker after this.
    dispatch_grace_s: int = 30
    # A queued chunk still not finished after this is queued again (its task was lost or dropped);
    # far above any wait the queue-depth limit allows, since a chunk run twice is wasted work.
    requeue_after_s: int = 600
    task_time_limit_s: int = 60  # a chunk running longer is killed and retried (a few times at most)
    predict_timeout_s: float = 30.0  # how long POST /predict waits before answering 504
    cors_origins: str = ""  # comma-separated origins allowed to call the API; empty: same-origin only
    worker_processes: int = 0  # worker processes per host; 0: one per core (see cores())
    worker_threads: int = 0  # ONNX Runtime threads per worker process; 0: cores / processes
    port: int = 8000  # where gunicorn (webapp/gunicorn_conf.py) listens
    web_processes: int = 0  # gunicorn processes; 0: one per core, at most 4
    web_threads: int = 16  # threads per gunicorn process: a long poll (?wait=) holds one while it waits

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Each field can be set by its upper-case name, e.g. REDIS_URL or MAX_IMAGES_PER_JOB."""
        values = {}
        for field in dataclasses.fields(cls):
            raw = os.environ.get(field.name.upper())
            kind = type(field.default)
            if raw is not None and (raw != "" or kind is str):  # "" means unset, except for text
                values[field.name] = kind(raw)
        return cls(**(values | overrides))

    @property
    def processes(self) -> int:
        """Worker processes this host runs."""
        return self.worker_processes or cores()

    @property
    def model_card_path(self) -> Path:
        """The card lives beside its model: same name, .json."""
        return Path(self.model_path).with_suffix(".json")
