"""Logging set-up: what reaches the output from arq's own logger."""

from __future__ import annotations

import json
import logging

from formy_async.logs import _TRACEBACKS, ArqJobLines, log_config


def arq_record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("arq.worker", level, __file__, 1, msg, args, None)


def test_arqs_line_at_each_job_start_and_end_is_dropped() -> None:
    lines = ArqJobLines()

    assert not lines.filter(arq_record(logging.INFO, "%6.2fs → %s(%s)%s", 0.1, "j", "", ""))
    assert not lines.filter(arq_record(logging.INFO, "%6.2fs ← %s ● %s", 0.1, "j", "done"))


def test_arqs_retries_failures_and_start_up_lines_pass() -> None:
    lines = ArqJobLines()

    assert lines.filter(arq_record(logging.INFO, "%6.2fs ↻ %s retrying job in %0.2fs", 1, "j", 2))
    assert lines.filter(arq_record(logging.ERROR, "%6.2fs ! %s failed, %s: %s", 1, "j", "E", "x"))
    assert lines.filter(arq_record(logging.INFO, "Starting worker for %d functions: %s", 2, "f"))


def test_the_filter_sits_on_arqs_worker_logger() -> None:
    config = log_config("json")

    assert config["loggers"]["arq.worker"]["filters"] == ["arq_job_lines"]
    assert config["filters"]["arq_job_lines"]["()"] is ArqJobLines


def test_a_logged_traceback_leaves_out_local_variables() -> None:
    secret = "s3cr3t-value"
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        rendered = _TRACEBACKS(None, "error", {"event": "failed", "exc_info": exc})

    assert rendered["exception"][0]["exc_value"] == "boom"
    assert secret not in json.dumps(rendered)
