"""The architecture's promises, checked in fresh interpreters: the web app never loads the model
runtime or the worker's code; the worker never loads Flask; only ml/ loads torch."""
from __future__ import annotations

import subprocess
import sys

from common.settings import REPO


def loaded_modules(code: str, env: dict) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_web_loads_no_model_runtime(settings):
    env = {"REDIS_URL": settings.redis_url, "MODEL_PATH": settings.model_path}
    modules = loaded_modules("from webapp import create_app\ncreate_app()", env)
    assert "flask" in modules
    assert not {"onnxruntime", "torch", "worker"} & modules


def test_worker_loads_no_web_framework(settings):
    env = {"REDIS_URL": settings.redis_url, "MODEL_PATH": settings.model_path}
    modules = loaded_modules("import worker.celery_app, worker.tasks", env)
    assert "celery" in modules
    assert not {"flask", "torch", "webapp"} & modules
