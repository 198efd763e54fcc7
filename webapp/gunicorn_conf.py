"""gunicorn settings. gevent workers: each connection costs a greenlet, not a thread, so clients
that send slowly or hold a long poll (?wait=) keep no one else waiting (README, "The front")."""
import json
import textwrap
import time

from gunicorn import util

from common import exposition, logs
from common.error_codes import ErrorCode
from common.settings import Settings, cores
from webapp.errors import UploadTooSlow

settings = Settings.from_env()
# Before any worker loads the app (and prometheus_client): every worker writes its metrics there,
# and whichever answers GET /metrics adds them all up (webapp/metrics.py).
metrics_directory = exposition.use_directory("web")
bind = f"{settings.host}:{settings.port}"  # compose sets HOST=0.0.0.0
# Half the cores by default: on one host the web shares them with the workers, whose work per image
# is the larger share, and each process costs a share of its own (it hears every job's finish).
workers = settings.web_processes or max(1, min(4, cores() // 2))
worker_class = "gevent"
worker_connections = settings.web_connections  # the app sizes its Redis pool by it too
# The gevent worker bounds two waits with this: for an idle keep-alive connection's next request,
# and for each request's line and headers to arrive (a client sending half a header is dropped).
keepalive = settings.web_idle_timeout_s
# Once the headers are in: a client silent this long while sending its body (or reading the answer)
# is dropped, so a connection that vanished mid-upload is not held for good.
body_timeout_s = settings.web_body_timeout_s
# A client that trickles its body never falls silent that long: this bounds the whole body.
body_deadline_s = settings.web_body_deadline_s
timeout = 60  # a worker silent this long is restarted; far above any request's legitimate wait
graceful_timeout = 35  # lets a long poll (30 s at most) finish on restart
accesslog = "-"
logconfig_dict = logs.gunicorn_config(settings.log_format)  # LOG_FORMAT=json: access lines too


def write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's own answer to a request it cannot parse (bad request line, header, framing), in
    the API's error shape instead of its HTML page."""
    body = json.dumps({"error": {"code": ErrorCode.for_status(status), "message": message or reason}})
    head = textwrap.dedent(f"""\
        HTTP/1.1 {status} {reason}\r
        Connection: close\r
        Content-Type: application/json\r
        X-Content-Type-Options: nosniff\r
        Content-Length: {len(body)}\r
        \r
        """)
    util.write_nonblock(sock, (head + body).encode("latin1"))


class BodyDeadline:
    """The connection's socket while one request is served: a read after the deadline raises
    UploadTooSlow (a 408 from the app) and the connection closes after that answer, as the rest of
    its body will never be read."""

    def __init__(self, req, deadline: float):
        self.req, self.sock, self.deadline = req, req.unreader.sock, deadline

    def recv(self, size: int) -> bytes:
        if time.monotonic() > self.deadline:
            self.req.must_close = True
            raise UploadTooSlow()
        return self.sock.recv(size)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def pre_request(worker, req) -> None:
    req.unreader.sock.settimeout(body_timeout_s)
    req.unreader.sock = BodyDeadline(req, time.monotonic() + body_deadline_s)


def post_request(worker, req, environ, resp) -> None:
    req.unreader.sock = req.unreader.sock.sock  # the connection's next request starts a deadline afresh


def on_starting(server) -> None:
    util.write_error = write_json_error  # the one place gunicorn writes its errors; workers inherit it


def child_exit(server, worker) -> None:
    exposition.forget_process(worker.pid)


def on_exit(server) -> None:
    exposition.remove_own(metrics_directory)
