"""gunicorn settings, from the same Settings as everything else (PORT, WEB_PROCESSES, WEB_THREADS):
threads, because a long poll (?wait=) holds its thread while it waits."""
from common.settings import Settings, cores

settings = Settings.from_env()
bind = f"0.0.0.0:{settings.port}"
workers = settings.web_processes or min(4, cores())
worker_class = "gthread"
threads = settings.web_threads
timeout = 60  # above the longest wait (30 s) a request may legitimately take
graceful_timeout = 30
accesslog = "-"
