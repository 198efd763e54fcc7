"""Hostile traffic against the real stack (gunicorn as `make run` starts it, a real worker, Redis):
hundreds of clients that send half a header and stop, or hold long polls, must not keep anyone
else waiting. A probe asks /health all along, and a 16-image job must complete meanwhile."""
from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
import uuid
from contextlib import ExitStack

import psutil
import pytest
import requests
from redis import Redis

from common.jobs import JobStore
from common.error_codes import ErrorCode
from harness import WebServer, valid_images, wait_for

HOSTILE = 200  # slow clients, or long polls, held at once
HOLD_S = 20
PROBE_TIMEOUT_S = 1.0  # the target: /health answers within a second, all along
PROBE_EVERY_S = 0.5
SETTLE_S = 15  # at most this long for the hostile connections to be taken in before probing
BODY_TIMEOUT_S = 5  # shorter than make run's, so a stalled body is given up on quickly
BODY_DEADLINE_S = 8  # likewise for a body trickled without ever stalling


@pytest.fixture(scope="module")
def web(settings, worker, tmp_path_factory):
    """The web app as `make run` serves it on this machine (2 processes), with the per-client
    caps lifted: every hostile connection here comes from 127.0.0.1."""
    env = {"WEB_PROCESSES": "2", "RATE_LIMIT": "", "MAX_LONG_POLLS_PER_CLIENT": str(10 * HOSTILE),
           "WEB_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "WEB_BODY_DEADLINE_S": str(BODY_DEADLINE_S)}
    server = WebServer(settings, tmp_path_factory.mktemp("web") / "web.log", env).start()
    yield server
    server.stop()


def connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(data)
    return sock


def probe(url: str, stop: threading.Event, latencies: list, misses: list) -> None:
    """Asks /health on a fresh connection every PROBE_EVERY_S. One late answer can be this busy
    machine's scheduler; two in a row cannot, so only those count as misses."""
    while not stop.is_set():
        for attempt in (1, 2):
            start = time.monotonic()
            try:
                ok = requests.get(f"{url}/health", timeout=PROBE_TIMEOUT_S).status_code == 200
            except requests.RequestException:
                ok = False
            latencies.append(time.monotonic() - start)
            if ok:
                break
            if attempt == 2:
                misses.append(time.strftime("%H:%M:%S"))
        stop.wait(PROBE_EVERY_S)


def classify_16(url: str) -> dict:
    files = [("file", (path.name, path.read_bytes())) for path, _ in valid_images(16)]
    response = requests.post(f"{url}/api/v1/jobs", files=files, timeout=60)
    assert response.status_code == 202, response.text
    status_url = url + response.json()["status_url"]
    def done() -> dict | None:
        job = requests.get(status_url, params={"wait": 10}, timeout=30).json()
        return job if job["status"] == "done" else None

    return wait_for(done, 120, "the 16-image job", interval=0)


Attack = tuple[dict, list[float], list[str], list[bytes | None]]  # the job, probe latencies, misses, answers


def under_attack(web: WebServer, hostile: list[bytes], settled=lambda: True) -> Attack:
    """Opens the hostile connections and waits until they are `settled` (taken in and waiting),
    then for HOLD_S probes /health and runs a 16-image job."""
    stop, latencies, misses = threading.Event(), [], []
    with ExitStack() as held:
        sockets = [held.enter_context(connect(web.port, data)) for data in hostile]
        deadline = time.monotonic() + SETTLE_S  # a server that cannot take them all in is probed all the same
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        prober = threading.Thread(target=probe, args=(web.url, stop, latencies, misses), daemon=True)
        prober.start()
        started = time.monotonic()
        try:
            job = classify_16(web.url)
        except (requests.RequestException, TimeoutError, AssertionError) as exc:  # a stalled server: reported below
            job = {"progress": repr(exc)}
        finally:
            job_s = time.monotonic() - started
            time.sleep(max(0.0, HOLD_S - job_s))
            stop.set()
            prober.join()
        deadline = time.monotonic() + 15  # past the long polls' 30 s wait, with room to spare
        answers = [read_answer(sock, deadline) for sock in sockets]
    latencies.sort()
    median = latencies[len(latencies) // 2]
    print(f"\n{len(hostile)} hostile connections, {len(latencies)} probes: median {median:.3f} s, "
          f"max {latencies[-1]:.3f} s, misses {len(misses)}; the 16-image job took {job_s:.1f} s")
    return job, latencies, misses, answers


def read_answer(sock: socket.socket, deadline: float) -> bytes | None:
    """What the server sent before it closed the connection; None if it is still open at `deadline`."""
    chunks = []
    try:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        return None
    except OSError:  # reset by the server: closed too
        pass
    return b"".join(chunks)


def assert_served(job: dict, misses: list[str]) -> None:
    assert misses == [], f"/health missed {PROBE_TIMEOUT_S:g} s twice in a row at {misses}"
    assert job["progress"] == {"done": 16, "failed": 0, "total": 16}


def test_slow_headers_do_not_stall_others(web):
    half_header = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    job, _, misses, answers = under_attack(web, [half_header] * HOSTILE)
    assert_served(job, misses)
    assert all(answer is not None for answer in answers), "the server still waits on half-sent headers"


def test_many_long_polls_do_not_stall_others(web, settings):
    redis = Redis.from_url(settings.redis_url)
    store, held_id = JobStore(redis, settings.result_ttl_s), str(uuid.uuid4())
    store.create(held_id, ["held.jpg"], {}, {}, [])  # nothing to run: it stays queued, so each poll waits its full time
    poll = f"GET /api/v1/jobs/{held_id}?wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()

    def all_waiting() -> bool:  # probed once every poll is subscribed: the probe measures the hold, not the arrival
        return redis.pubsub_numsub(store.channel(held_id))[0][1] >= HOSTILE

    job, _, misses, answers = under_attack(web, [poll] * HOSTILE, all_waiting)
    assert_served(job, misses)
    statuses = [answer.split(b" ", 2)[1] if answer else b"none" for answer in answers]
    assert statuses == [b"200"] * HOSTILE, f"long polls not all held and answered: {sorted(set(statuses))}"


@pytest.mark.parametrize("request_head, status", [
    (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"NOT A REQUEST\r\n\r\n", 400),
    (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # A broken chunk shows only as the app reads the body.
    (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
])
def test_requests_that_cannot_be_parsed_get_json_errors(web, request_head, status):
    with connect(web.port, request_head) as sock:
        answer = read_answer(sock, time.monotonic() + 30)
    head, _, rest = answer.partition(b"\r\n\r\n")
    response = http.client.parse_headers(io.BytesIO(head.split(b"\r\n", 1)[1] + b"\r\n\r\n"))
    assert head.split(b" ", 2)[1] == str(status).encode() and response["Content-Type"] == "application/json"
    error = json.loads(rest[:int(response["Content-Length"])])["error"]
    assert error["code"] in {code.value for code in ErrorCode} and error["message"]  # from the one list


def test_a_body_that_stops_arriving_is_given_up_on(web):
    head = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n")
    with connect(web.port, head) as sock:
        answer = read_answer(sock, time.monotonic() + 10 * BODY_TIMEOUT_S)
    assert answer is not None, "the server still waits on a body that stopped arriving"
    assert answer.split(b" ", 2)[1] == b"400" and b'"incomplete_body"' in answer


def test_a_body_trickled_past_the_deadline_is_cut(web):
    """A byte every second never stalls for WEB_BODY_TIMEOUT_S, so only the deadline ends it."""
    head = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n--b\r\n")
    deadline = time.monotonic() + 10 * BODY_DEADLINE_S
    with connect(web.port, head) as sock:
        sock.settimeout(1)
        answer = b""
        while not answer and time.monotonic() < deadline:
            try:
                answer = sock.recv(65536)  # waits a second for an answer, then sends one more byte
            except TimeoutError:
                sock.sendall(b"x")
        answer += read_answer(sock, time.monotonic() + 5) or b""
    assert answer.split(b" ", 2)[1] == b"408" and b'"upload_too_slow"' in answer, answer[:300]


def test_listens_on_loopback_unless_host_is_set(web):
    connections = psutil.Process(web.process.pid).net_connections("tcp")
    listening = [c.laddr for c in connections if c.status == psutil.CONN_LISTEN]
    assert [(address.ip, address.port) for address in listening] == [("127.0.0.1", web.port)]
