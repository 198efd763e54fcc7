"""common/logs.py on its own: what a line about a job carries, in each LOG_FORMAT. (The stack's
JSON lines, web and worker, are read in tests/test_metrics.py.)"""
from __future__ import annotations

import io
import json
import logging

import pytest

from common.logs import JobFields, about_job, formatter
from common.settings import Settings, SettingError

JOB = "6f1c1a3e-3c55-4c1e-9d51-1f0a2b3c4d5e"


@pytest.fixture
def logged():
    """A logger writing through the service's handler setup into a string, per format."""
    def make(log_format: str):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter(log_format))
        handler.addFilter(JobFields())
        logger = logging.getLogger(f"test-logs-{log_format}")
        logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
        return logger, out
    return make


def test_json_lines_carry_the_job_fields(logged):
    logger, out = logged("json")
    with about_job(job_id=JOB, chunk=[0, 1], model="m", version="1"):
        logger.info("chunk written", extra={"duration_s": 0.25})
    logger.info("no job here")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first | {"timestamp": None} == {"level": "INFO", "logger": "test-logs-json", "message": "chunk written",
                                           "job_id": JOB, "chunk": [0, 1], "model": "m", "version": "1",
                                           "duration_s": 0.25, "timestamp": None}
    assert "job_id" not in second


def test_celery_task_lines_get_the_job_from_the_arguments(logged):
    logger, out = logged("json")
    data = {"id": "task-1", "name": "worker.classify_images", "args": f"['{JOB}', [0]]"}
    logger.info("Task %(name)s[%(id)s] received", data, extra={"data": data})
    assert json.loads(out.getvalue())["job_id"] == JOB


def test_text_lines_end_with_the_job_fields(logged):
    logger, out = logged("text")
    with about_job(job_id=JOB, chunk=[3]):
        logger.warning("slow")
    assert out.getvalue().rstrip().endswith(f"WARNING test-logs-text: slow [job_id={JOB} chunk=[3]]")


def test_an_unknown_format_is_a_bad_setting():
    """Refused where every setting is checked, so `make run` stops at it in one line."""
    with pytest.raises(SettingError, match="LOG_FORMAT='xml' is not valid: expected one of text, json"):
        Settings.from_env({"LOG_FORMAT": "xml"})
