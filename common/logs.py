"""How the web app and the workers log: one JSON object a line (`LOG_FORMAT=json`, for a log
collector) or plain text (`LOG_FORMAT=text`, for a person at a terminal), through the same handler.

A line about a job carries `job_id`, `chunk`, `model`, `version` and `duration_s` as fields of
their own, so a collector can find every line of one job: code passes them with `extra=`, or
wraps its work in `about_job(...)`, whose fields every line logged inside it gets (Celery's own
task lines included). Celery's "Task ... received" line, logged where no job is current, gets the
job id from the task's arguments.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token

from pythonjsonlogger.json import JsonFormatter

from common.settings import LOG_FORMATS

JOB_FIELDS = ("job_id", "chunk", "model", "version", "duration_s")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# gunicorn's access line passes its values as a mapping of one-letter atoms; these become fields.
ACCESS_FIELDS = {"h": "remote_addr", "m": "method", "U": "path", "q": "query", "s": "status", "B": "bytes",
                 "L": "duration_s", "a": "user_agent"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_job: ContextVar[dict] = ContextVar("job", default={})


@contextmanager
def about_job(**fields) -> Iterator[None]:
    """Every line logged inside (in this thread or greenlet) carries these fields too."""
    token = begin_job(**fields)
    try:
        yield
    finally:
        end_job(token)


def begin_job(**fields) -> Token:
    """`about_job` for work that starts and ends in two callbacks (Celery's task signals)."""
    return _job.set(_job.get() | fields)


def end_job(token: Token) -> None:
    _job.reset(token)


class JobFields(logging.Filter):
    """Adds the current job's fields (`about_job`) to each record that does not carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _job.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        data = getattr(record, "data", None)  # Celery's task lines: {"id", "name", "args", ...}
        if not hasattr(record, "job_id") and isinstance(data, Mapping):
            found = UUID.search(str(data.get("args", "")))
            if found:
                record.job_id = found.group()
        return True


class JsonLines(JsonFormatter):
    """python-json-logger's formatter; gunicorn's access lines get their values as named fields."""

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            log_data.update({name: record.args.get(atom) for atom, name in ACCESS_FIELDS.items()})
            log_data["status"] = int(log_data["status"]) if str(log_data["status"]).isdigit() else log_data["status"]
            log_data["duration_s"] = float(log_data["duration_s"] or 0)


class TextLines(logging.Formatter):
    """The plain format, with the job's fields appended as `name=value` where a line has them."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={getattr(record, name)}" for name in JOB_FIELDS if hasattr(record, name))
        line = super().format(record)
        return f"{line} [{fields}]" if fields else line


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLines(["levelname", "name", "message"], rename_fields={"levelname": "level", "name": "logger"},
                         timestamp=True)
    if log_format == "text":
        return TextLines(TEXT_FORMAT)
    raise ValueError(f"LOG_FORMAT={log_format!r} is not valid: expected one of {', '.join(LOG_FORMATS)}")


def configure(log_format: str, level: int | str = logging.INFO) -> None:
    """The root logger writes every line to stderr in `log_format`; other loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    handler.addFilter(JobFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def gunicorn_config(log_format: str) -> dict:
    """gunicorn's `logconfig_dict`: its error and access lines and the app's, all in `log_format`."""
    console = {"handlers": ["console"], "level": "INFO", "propagate": False}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"main": {"()": "common.logs.formatter", "log_format": log_format}},
        "filters": {"job": {"()": "common.logs.JobFields"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["job"],
                                 "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": console, "gunicorn.access": console},
        "root": {"handlers": ["console"], "level": "INFO"},
    }
