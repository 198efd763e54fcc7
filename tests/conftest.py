"""Real parts for every test: a private redis-server, real Celery worker processes, the shipped
ONNX model (or MODEL_PATH), real image files. Nothing is mocked. The processes come from
harness.py, as the benchmark's do; a fixture starts only what its tests use."""
from __future__ import annotations

import dataclasses
import itertools
import shutil

import pytest
from playwright.sync_api import sync_playwright
from redis import Redis

from common.settings import Settings
from harness import TIGHT_LIMITS, RedisServer, Worker, serve
from webapp import create_app

# Debian's Chromium, as a person's browser would run: headless, and with nothing that calls out.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (Playwright's own download cannot work offline)."""
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server) -> Settings:
    """Database 0 of the session's Redis, which the session's `worker` serves. Test workers serve
    no metrics port unless a test gives one (tests/test_metrics.py), so they never contend for it."""
    return Settings.from_env(redis_url=redis_server.url, worker_processes=1, worker_metrics_port=0)


@pytest.fixture(scope="session")
def worker(settings, tmp_path_factory):
    process = Worker(settings, tmp_path_factory.mktemp("logs") / "worker.log").start()
    yield process
    process.stop()


# Database 0 is the session worker's, 1 the job store tests'; the rest are handed out in turn.
_databases = itertools.cycle(range(2, 16))


@pytest.fixture
def fresh_settings(settings):
    """Makes settings for a fresh, empty database of the session's Redis that no worker serves
    (until a test starts one): its queue, counters and jobs are the test's alone."""
    def make(**overrides) -> Settings:
        url = settings.redis_url.rsplit("/", 1)[0] + f"/{next(_databases)}"
        Redis.from_url(url).flushdb()
        return dataclasses.replace(settings, redis_url=url, **overrides)
    return make


@pytest.fixture(scope="session")
def app(settings):
    return create_app(settings)


@pytest.fixture
def web_client(app):
    """The app over the session's Redis, with no worker started for it: for answers that need none."""
    return app.test_client()


@pytest.fixture
def client(app, worker):
    """The app with the session's worker behind it."""
    return app.test_client()


@pytest.fixture(scope="session")
def live_server(app, worker):
    """The app on a real HTTP port, for the browser."""
    yield from serve(app)


@pytest.fixture(scope="session")
def tight_limits() -> dict:
    return TIGHT_LIMITS


@pytest.fixture(scope="session")
def tight_server(settings, worker):
    """The app with TIGHT_LIMITS on a real HTTP port, sharing the session's Redis and worker."""
    yield from serve(create_app(dataclasses.replace(settings, **TIGHT_LIMITS)))
