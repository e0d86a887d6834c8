"""What the `formy-async` client commands print: jobs, events, a live progress bar, errors."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from ..errors import FormyAPIError
from ..models import (
    Done,
    Event,
    Failed,
    JobView,
    Output,
    Preview,
    Retrying,
    Started,
    Submitted,
)
from ..models import Progress as ProgressEvent
from .api import WorkflowInfo

ShowEvent = Callable[[Event], None]
#: terminal controls: bold, back to plain, and back to the start of a line that is cleared
BOLD, PLAIN, CLEAR_LINE = "\x1b[1m", "\x1b[0m", "\r\x1b[2K"


class Printer:
    """Writes to stdout (and errors to stderr): a live bar and tables on a terminal, plain
    lines otherwise, JSON lines with `--json`."""

    def __init__(self, *, json_lines: bool = False, out: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.out = out or sys.stdout
        self.tty = self.out.isatty()

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A message for people only: on stderr, so that stdout stays parseable."""
        print(text, file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"formy-async: {text}", file=sys.stderr, flush=True)

    def api_error(self, exc: FormyAPIError) -> None:
        self.error(f"{exc.message} ({exc.code})")
        for detail in exc.details if isinstance(exc.details, list) else []:
            if isinstance(detail, dict) and "param" in detail:
                self.note(f"  {detail['param']}: {detail.get('message', detail.get('type', ''))}")

    def model(self, model: BaseModel) -> None:
        self.line(model.model_dump_json())

    # --- jobs ---------------------------------------------------------------------------------

    def job(self, job: JobView) -> None:
        if self.json_lines:
            self.model(job)
            return
        rows: list[tuple[str, Any]] = [
            ("id", job.id),
            ("workflow", job.workflow),
            ("status", job.status),
            ("progress", f"{job.progress}%"),
            ("created", _when(job.created_at)),
            ("started", _when(job.started_at)),
            ("finished", _when(job.finished_at)),
        ]
        if job.error is not None:
            rows.append(("error", f"{job.error.code}: {job.error.message}"))
        rows += [("output", output.url) for output in job.outputs]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            self.line(f"{name:<{width}}  {value}")

    def jobs(self, jobs: Sequence[JobView]) -> None:
        if self.json_lines:
            for job in jobs:
                self.model(job)
            return
        cells = [(job.id, job.workflow, _status(job), _when(job.created_at)) for job in jobs]
        self._table(("id", "workflow", "status", "created"), cells)

    def workflows(self, workflows: Sequence[WorkflowInfo]) -> None:
        if self.json_lines:
            for workflow in workflows:
                self.model(workflow)
            return
        cells = [(w.name, w.title, ", ".join(w.params.get("properties", {}))) for w in workflows]
        self._table(("name", "title", "params"), cells)

    def _table(self, header: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
        if not self.tty:
            for row in cells:
                self.line("\t".join(row))
            return
        widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
        self.line(BOLD + _columns(header, widths) + PLAIN)
        for row in cells:
            self.line(_columns(row, widths))

    def finished(self, job: JobView) -> None:
        """The outcome of a followed job: on stdout when done, on stderr otherwise."""
        if self.json_lines:
            self.model(job)
            return
        took = (job.finished_at or job.created_at) - job.created_at
        if job.status == "done":
            self.line(f"job {job.id} done in {took:.1f} s: {len(job.outputs)} output(s)")
        elif job.error is not None:
            self.error(f"job {job.id} {job.status}: {job.error.message} ({job.error.code})")
        else:
            self.error(f"job {job.id} {job.status}")

    def saved(self, paths: Sequence[Path]) -> None:
        say = self.note if self.json_lines else self.line
        for path in paths:
            say(f"saved {path}")

    # --- events -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[ShowEvent]:
        """A function to show each event of the job: a live bar on a terminal, else lines."""
        if self.json_lines:
            yield self.model
        elif not self.tty:
            yield lambda event: self.line(event_line(event))
        else:
            with _live_bar(self.out, job_id) as show:
                yield show


class LiveBar:
    """One line of a terminal redrawn in place: the node running, a bar, the percentage, the
    sampler's step and the time since it began; it redraws at least every `TICK` seconds."""

    WIDTH = 30
    TICK = 0.5

    def __init__(self, out: TextIO, label: str) -> None:
        self.out = out
        self.description = label
        self.step = ""
        self.percent = 0
        self.began = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    def show(self, event: Event) -> None:
        if isinstance(event, ProgressEvent):
            self.description = event.node_type or event.node
            self.step = f"step {event.value:g}/{event.max:g}" if event.max > 1 else ""
        elif not isinstance(event, Preview):
            self.description, self.step = event.type, ""
        self.percent = event.progress
        self.draw()

    def draw(self) -> None:
        filled = round(self.WIDTH * max(0, min(self.percent, 100)) / 100)
        bar = "━" * filled + "─" * (self.WIDTH - filled)
        seconds = int(time.monotonic() - self.began)
        took = f"{seconds // 3600}:{seconds // 60 % 60:02}:{seconds % 60:02}"
        text = f"{self.description:<16} {bar} {self.percent:>3}% {self.step:<12} {took}"
        # a line longer than the terminal wraps, and the carriage return then redraws only
        # its last part
        width = shutil.get_terminal_size().columns - 1
        self.out.write(f"{CLEAR_LINE}{text[:width]}")
        self.out.flush()

    def tick(self) -> None:
        """Draw now and again every TICK seconds, when there is a running loop to time it."""
        self.draw()
        with contextlib.suppress(RuntimeError):  # no loop: it redraws with each event only
            self._timer = asyncio.get_running_loop().call_later(self.TICK, self.tick)

    def clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.out.write(CLEAR_LINE)
        self.out.flush()


@contextlib.contextmanager
def _live_bar(out: TextIO, job_id: str) -> Iterator[ShowEvent]:
    """A LiveBar for the block, drawn at once and gone after it (the outcome is printed)."""
    bar = LiveBar(out, job_id[:8])
    bar.tick()
    try:
        yield bar.show
    finally:
        bar.clear()


def event_line(event: Event) -> str:
    """One plain line per event: seq, type, status, progress, then what it says."""
    return (
        f"{event.seq:>3} {event.type:<9} {event.status:<10} {event.progress:>3}%  {_detail(event)}"
    )


def _detail(event: Event) -> str:
    if isinstance(event, Submitted):
        return event.workflow
    if isinstance(event, Started):
        return f"prompt {event.prompt_id}"
    if isinstance(event, ProgressEvent):
        return f"node {event.node} {event.node_type or ''} {event.value:g}/{event.max:g}"
    if isinstance(event, Output):
        return event.output.filename
    if isinstance(event, Done):
        return f"{len(event.outputs)} output(s)"
    if isinstance(event, Retrying):
        attempt = f"attempt {event.attempt}/{event.max_attempts}"
        return f"{attempt} in {event.retry_in:g} s: {event.error.code}"
    if isinstance(event, Failed):
        return f"{event.error.code}: {event.error.message}"
    if isinstance(event, Preview):
        return event.url
    return ""  # cancelled


def _columns(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Cells padded to their column's width, two spaces apart; ids are kept whole."""
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _status(job: JobView) -> str:
    return f"{job.status} {job.progress}%" if job.status == "processing" else job.status


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
