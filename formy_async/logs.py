"""Logging set-up: structlog everywhere; console lines in development, JSON in production."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


#: exceptions as JSON, without the frames' local variables (they may hold secrets)
_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)

_ARQ_ROUTINE = ("%6.2fs → ", "%6.2fs ← ")


class ArqJobLines(logging.Filter):
    """Drops arq's own INFO line at each job's start and end (`  0.12s → run_job(…)`): the job's
    own log says the same with its id bound, and at hundreds of jobs a second the lines cost a
    noticeable share of a worker's CPU. Its retries, aborts and failures pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ARQ_ROUTINE)


def _renderer(fmt: Literal["json", "console"]) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())


def _formatter_processors(fmt: Literal["json", "console"]) -> list[Any]:
    processors = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt)]
    if fmt == "json":
        processors.insert(1, _TRACEBACKS)
    return processors


def log_config(fmt: Literal["json", "console"], level: str = "INFO") -> dict[str, Any]:
    """A dictConfig sending stdlib loggers (aiohttp, arq, redis) through structlog's renderer:
    for arq's own command line (`--custom-log-dict`); `setup_logging` sets up the same."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": _formatter_processors(fmt),
                "foreign_pre_chain": _SHARED,
            }
        },
        "filters": {"arq_job_lines": {"()": ArqJobLines}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            "aiohttp.access": {"level": "WARNING"},
            "arq.worker": {"filters": ["arq_job_lines"]},
        },
    }


def _route_stdlib(fmt: Literal["json", "console"], level: str) -> None:
    """What `log_config` says, done directly: `logging.config` and the `logging.handlers` it
    brings cost a serving process about 0.35 MB of its memory, for this one call."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=_formatter_processors(fmt), foreign_pre_chain=_SHARED
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    arq = logging.getLogger("arq.worker")
    for old_filter in [f for f in arq.filters if isinstance(f, ArqJobLines)]:
        arq.removeFilter(old_filter)
    arq.addFilter(ArqJobLines())


def setup_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO") -> None:
    """Configure structlog and the stdlib loggers; `auto` is console on a terminal, else JSON."""
    chosen: Literal["json", "console"] = (
        fmt if fmt != "auto" else ("console" if sys.stdout.isatty() else "json")
    )
    _route_stdlib(chosen, level)
    # our own lines are rendered and written by structlog directly: through the stdlib logging
    # machinery each cost several times as much, a few percent of a busy worker's CPU
    own: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if chosen == "json":
        own.append(_TRACEBACKS)
    structlog.configure(
        processors=[*own, _renderer(chosen)],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=chosen == "json",
    )


#: for `arq worker_settings.WorkerSettings --custom-log-dict formy_async.logs.ARQ_LOG_CONFIG`
ARQ_LOG_CONFIG = log_config("json")
