"""Logging set-up: what reaches the output from the stdlib's loggers (arq's, aiohttp's)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from formy_async.logs import _TRACEBACKS, ArqJobLines, log_config, setup_logging


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


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The root and arq loggers as they were, after a test that set logging up."""
    root, arq = logging.getLogger(), logging.getLogger("arq.worker")
    handlers, level, filters = root.handlers[:], root.level, arq.filters[:]
    yield
    root.handlers[:], arq.filters[:] = handlers, filters
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restored_logging")
def test_a_stdlib_loggers_line_comes_out_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "INFO")

    logging.getLogger("aiohttp.server").warning("bad request from %s", "1.2.3.4")

    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "bad request from 1.2.3.4"
    assert line["level"] == "warning"
    assert line["logger"] == "aiohttp.server"


@pytest.mark.usefixtures("restored_logging")
def test_setting_up_twice_leaves_one_handler_and_one_arq_filter() -> None:
    setup_logging("json", "INFO")
    setup_logging("console", "DEBUG")

    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger().level == logging.DEBUG
    arq_filters = logging.getLogger("arq.worker").filters
    assert sum(isinstance(f, ArqJobLines) for f in arq_filters) == 1
    assert logging.getLogger("aiohttp.access").level == logging.WARNING
