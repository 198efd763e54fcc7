"""Settings: a wrong value is named with the type it needs; `make run` (bin/run) reads .env, and
a variable set in the environment wins; .env.example lists every setting at its default."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from dataclasses import fields

import pytest
import requests
from redis import Redis

from common import workers
from common.settings import REPO, Settings, SettingError, env_example
from harness import RedisServer, Service, free_port, wait_for

SETTING_NAMES = {f.name.upper() for f in fields(Settings)}


def clean_environment(**variables: str) -> dict:
    """This process's environment without any setting, plus `variables`."""
    return {k: v for k, v in os.environ.items() if k not in SETTING_NAMES} | variables


@pytest.mark.parametrize("name, value, expected", [("MAX_IMAGES_PER_JOB", "ten", "a whole number (int)"),
                                                   ("PREDICT_TIMEOUT_S", "soon", "a number (float)"),
                                                   ("WEB_CONNECTIONS", "1.5", "a whole number (int)")])
def test_a_bad_value_names_the_variable_and_the_type(name, value, expected):
    with pytest.raises(SettingError) as error:
        Settings.from_env({name: value})
    assert f"{name}={value!r}" in str(error.value) and expected in str(error.value)


def test_empty_numbers_mean_the_default_and_text_is_taken_as_is():
    settings = Settings.from_env({"MAX_IMAGES_PER_JOB": "", "RATE_LIMIT": "", "PORT": "9000"})
    assert (settings.max_images_per_job, settings.rate_limit, settings.port) == (64, "", 9000)


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_make_run_stops_at_a_bad_setting_in_one_line(tmp_path, where):
    env_file = tmp_path / ".env"
    env = clean_environment(ENV_FILE=str(env_file))
    if where == ".env":
        env_file.write_text("MAX_IMAGES_PER_JOB=ten\n")
    else:
        env["MAX_IMAGES_PER_JOB"] = "ten"
    run = subprocess.run(["bin/run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == ("bad setting: MAX_IMAGES_PER_JOB='ten' is not valid: "
                                  "expected a whole number (int), such as the default 64")
    assert run.stdout == ""  # nothing was started


def test_make_run_reads_dotenv_and_the_environment_wins(tmp_path):
    """Every process bin/run starts sees .env: gunicorn its port, the web app its limits, the
    worker its model; a variable set in the environment overrides the file's."""
    redis = RedisServer(tmp_path / "redis").start()
    port = free_port()
    env_file = tmp_path / ".env"
    env_file.write_text(f"# as a user writes it\nPORT={port}\nMAX_IMAGES_PER_JOB=7\nMAX_IMAGE_BYTES=1000\n"
                        "MODEL_PATH=models/sports100-lite0.onnx\nWORKER_PROCESSES=1\nWEB_PROCESSES=1\n")
    env = clean_environment(ENV_FILE=str(env_file), REDIS_URL=redis.url, MAX_IMAGE_BYTES="2000")
    stack = Service("bin/run", tmp_path / "run.log")
    stack.launch(["bin/run"], env)
    try:
        limits = wait_for(lambda: stack.check_alive() and get_json(f"http://127.0.0.1:{port}/api/v1/limits"),
                          120, "the web app on the port .env names")
        assert limits["max_images_per_job"] == 7 and limits["max_image_bytes"] == 2000
        ready = wait_for(lambda: stack.check_alive() and workers.ready_workers(Redis.from_url(redis.url)),
                         180, "the worker with its model")
        fp32_card = json.loads((REPO / "models" / "sports100-lite0.json").read_text())
        assert ready[0]["model"]["name"] == fp32_card["name"]
    finally:
        stack.stop(timeout=60)
        redis.stop()


def get_json(url: str) -> dict | None:
    try:
        response = requests.get(url, timeout=2)
        return response.json() if response.ok else None
    except requests.RequestException:
        return None


def test_env_example_lists_every_setting_at_its_default():
    example = (REPO / ".env.example").read_text()
    regenerate = "python -c 'from common.settings import env_example; print(env_example(), end=\"\")' > .env.example"
    assert example == env_example(), f"out of date; regenerate it with: {regenerate}"
    # Each setting once, and uncommented the lines give the defaults (paths relative to the repo).
    assignments = [line.removeprefix("# ").split("=", 1) for line in example.splitlines() if "=" in line]
    values = {name: value for name, value in assignments if name in SETTING_NAMES}
    assert len(values) == len(SETTING_NAMES)
    from_example = Settings.from_env(values)
    assert dataclasses.replace(from_example, model_path=str(REPO / from_example.model_path)) == Settings()
