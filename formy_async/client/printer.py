"""What the `formy-async` client commands print: jobs, events, a live progress bar, errors."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

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


class Printer:
    """Writes to stdout (and errors to stderr): a live bar and tables on a terminal, plain
    lines otherwise, JSON lines with `--json`."""

    def __init__(self, *, json_lines: bool = False) -> None:
        self.json_lines = json_lines
        self.console = Console(file=sys.stdout, highlight=False)
        self.tty = self.console.is_terminal

    def line(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

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
        table = Table(box=None, header_style="bold")
        for i, name in enumerate(header):
            table.add_column(name, no_wrap=i == 0)  # ids and names are copied: keep them whole
        for row in cells:
            table.add_row(*row)
        self.console.print(table)

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
            with _live_bar(self.console, job_id) as show:
                yield show


@contextlib.contextmanager
def _live_bar(console: Console, job_id: str) -> Iterator[ShowEvent]:
    progress = Progress(
        TextColumn("{task.description:<16}", style="bold", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[step]:<12}", markup=False),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task(job_id[:8], total=100, step="")

    def show(event: Event) -> None:
        if isinstance(event, ProgressEvent):
            step = f"step {event.value:g}/{event.max:g}" if event.max > 1 else ""
            progress.update(task, description=event.node_type or event.node, step=step)
        elif not isinstance(event, Preview):
            progress.update(task, description=event.type, step="")
        progress.update(task, completed=event.progress)

    with progress:
        yield show


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


def _status(job: JobView) -> str:
    return f"{job.status} {job.progress}%" if job.status == "processing" else job.status


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
