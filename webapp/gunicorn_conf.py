"""gunicorn settings: threads, because a long poll (?wait=) holds its thread while it waits."""
import os

from common.settings import cores

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_PROCESSES", min(4, cores())))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", 16))
timeout = 60  # above the longest wait (30 s) a request may legitimately take
graceful_timeout = 30
accesslog = "-"
