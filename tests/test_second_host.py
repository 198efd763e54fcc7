"""A second host, for real: Redis and the web app on one "host", workers on others, each host a
Linux network namespace linked to the first by a veth pair, so a worker reaches Redis only over
the network and knows nothing but its URL (README, "Adding a worker on another host").

Topology: a bridge in host A (Redis and gunicorn, 10.X.Y.1); hosts B (.2) and C (.3) and this
machine (.10, the client) each on a veth pair whose other end is a port of that bridge. Redis
listens on A's address only and needs a password (requirepass), as it must off the loopback.
Needs root (`ip netns`, `tc`); skipped, saying why, where the kernel or permissions refuse.
"""
from __future__ import annotations

import random
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from common.settings import Settings
from harness import RedisServer, WebServer, Worker, stopped_on_exit, valid_images, wait_for

PASSWORD = "second-host-" + uuid.uuid4().hex
CHUNK_SIZE = 4  # 8 chunks a 32-image job: a host cut mid-job leaves some done, some held, some queued
# A task held by the host that was cut goes back on the queue after this; far above a chunk's time
# over the slowed link, so no chunk is handed out twice while its worker is still on it.
VISIBILITY_TIMEOUT_S = 15
# Slows A's link to B (about 0.85 MB for the second job's images) so the cut lands mid-job.
SLOW_LINK = "800kbit"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def unused_subnet() -> str:
    """A 10.X.Y /24 that no address or route of this machine touches, e.g. "10.213.7"."""
    taken = ip("-4", "addr") + ip("-4", "route")
    while True:
        prefix = f"10.{random.randint(200, 254)}.{random.randint(0, 254)}"
        if f"{prefix}." not in taken:
            return prefix


class Hosts:
    """Named network namespaces a, b, c (hosts), linked as the module docstring says."""

    HOSTS = {"a": 1, "b": 2, "c": 3}

    def __init__(self):
        self.tag, self.subnet = uuid.uuid4().hex[:6], ""
        self.made: list[str] = []

    def namespace(self, host: str) -> str:
        return f"sportclf-{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.HOSTS.get(host, 10)}"

    def on(self, host: str) -> tuple[str, ...]:
        """The prefix that runs a command on `host` (`ip netns exec` execs it: same pid)."""
        return ("ip", "netns", "exec", self.namespace(host))

    def build(self) -> None:
        self.subnet = unused_subnet()
        for host in self.HOSTS:
            ip("netns", "add", self.namespace(host))
            self.made.append(self.namespace(host))
            ip("-n", self.namespace(host), "link", "set", "lo", "up")
        a = self.namespace("a")
        ip("-n", a, "link", "add", "br0", "type", "bridge")
        ip("-n", a, "addr", "add", f"{self.address('a')}/24", "dev", "br0")
        ip("-n", a, "link", "set", "br0", "up")
        for host in ("b", "c", "client"):
            self.link(host)

    def link(self, host: str) -> None:
        """A veth pair from `host` (this machine for "client") to a port of A's bridge."""
        a, name = self.namespace("a"), "eth0" if host in self.HOSTS else f"sc{self.tag}"
        where = ("-n", self.namespace(host)) if host in self.HOSTS else ()
        ip(*where, "link", "add", name, "type", "veth", "peer", "name", f"to-{host}", "netns", a)
        ip("-n", a, "link", "set", f"to-{host}", "master", "br0", "up")
        ip(*where, "addr", "add", f"{self.address(host)}/24", "dev", name)
        ip(*where, "link", "set", name, "up")

    def slow_link(self, host: str, rate: str) -> None:
        """Caps what A sends `host` at `rate` (a token bucket on A's end of the pair)."""
        subprocess.run([*self.on("a"), "tc", "qdisc", "replace", "dev", f"to-{host}", "root", "tbf",
                        "rate", rate, "burst", "16kb", "latency", "2s"], check=True, capture_output=True)

    def cut(self, host: str) -> None:
        """The host's network goes away (its link down), its processes still running."""
        ip("-n", self.namespace(host), "link", "set", "eth0", "down")

    def remove(self) -> None:
        """This machine's end of its pair first: a deleted namespace's interfaces go with it, but
        the kernel may free the namespace (and so the pair) only much later."""
        subprocess.run(["ip", "link", "delete", f"sc{self.tag}"], capture_output=True)
        for namespace in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


@pytest.fixture
def hosts():
    """The hosts, with every process started on them stopped and the namespaces removed on the way
    out, however the test ends; skipped where namespaces, veth pairs or tc are refused."""
    if not (shutil.which("ip") and shutil.which("tc") and shutil.which("redis-server")):
        pytest.skip("needs iproute2's ip and tc and redis-server")
    made = Hosts()
    try:
        try:
            made.build()
            made.slow_link("c", "1gbit")  # the token bucket qdisc that slow_link needs is there
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"network namespaces refused here ({' '.join(exc.cmd[:4])}...): {exc.stderr.strip()}")
        with stopped_on_exit():
            yield made
    finally:
        made.remove()


def submit(web: WebServer, start: int) -> str:
    """POSTs 32 real photos from this machine (the client); returns the job's status URL."""
    files = [("file", (path.name, path.read_bytes())) for path, _ in valid_images(32, start)]
    response = requests.post(f"{web.url}/api/v1/jobs", files=files, timeout=60)
    assert response.status_code == 202, response.text
    return web.url + response.json()["status_url"]


def job(status_url: str, wait: int = 0) -> dict:
    return requests.get(f"{status_url}?wait={wait}", timeout=wait + 30).json()


def ready_workers(web: WebServer) -> int:
    return requests.get(f"{web.url}/ready", timeout=10).json()["workers"]


def completed(status_url: str) -> dict:
    """The job once done; fails after a generous deadline (a busy machine loads models slowly)."""
    return wait_for(lambda: (j := job(status_url, wait=10))["status"] == "done" and j, 300, "the job to finish")


def worker_on(hosts: Hosts, host: str, redis_url: str, logs: Path) -> Worker:
    """A worker on `host` told only where Redis is (and, for the test, one process and the short
    visibility timeout); its code and model are this checkout's, as a worker image carries them."""
    settings = Settings.from_env({}, redis_url=redis_url, worker_processes=1, visibility_timeout_s=VISIBILITY_TIMEOUT_S)
    return Worker(settings, logs / f"worker-{host}.log", prefix=hosts.on(host)).start()


def test_workers_on_other_hosts_finish_a_job_even_when_one_host_is_cut_off(hosts, tmp_path):
    redis = RedisServer(tmp_path / "redis", password=PASSWORD, host=hosts.address("a"), prefix=hosts.on("a")).start()
    web_settings = Settings.from_env({}, redis_url=redis.url, chunk_size=CHUNK_SIZE)
    web = WebServer(web_settings, tmp_path / "web.log", host=hosts.address("a"), prefix=hosts.on("a")).start()
    worker_b = worker_on(hosts, "b", redis.url, tmp_path)
    assert ready_workers(web) == 1  # B shows up on A

    first = completed(submit(web, 0))  # host B's worker alone
    assert first["progress"] == {"done": 32, "failed": 0, "total": 32}

    hosts.slow_link("b", SLOW_LINK)
    status_url = submit(web, 32)
    wait_for(lambda: job(status_url)["progress"]["done"] > 0, 120, "host B to finish a chunk", interval=0.05)
    hosts.cut("b")
    cut_off = job(status_url)
    assert cut_off["status"] == "running" and 0 < cut_off["progress"]["done"] < 32  # cut mid-job
    assert worker_b.check_alive()  # B's worker still runs and holds its chunk: only its network is gone

    worker_on(hosts, "c", redis.url, tmp_path)
    second = completed(status_url)
    assert second["progress"] == {"done": 32, "failed": 0, "total": 32}
    assert {image["status"] for image in second["results"]} == {"done"}
    # The cut-off host's heartbeat lapses: /ready counts C's process alone.
    wait_for(lambda: ready_workers(web) == 1, 90, "host B to drop out of /ready")
    worker_b.kill()  # its Redis retries would hold a graceful stop for minutes
