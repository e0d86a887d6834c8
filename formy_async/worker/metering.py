"""What one attempt at a job used of ComfyUI: its wait, its execution and its model loads.

The execution is timed by ComfyUI itself: the `execution_start` and final messages of the
prompt's history carry the server's timestamps (ms), both from one clock. Only when the server
gives none (the attempt was stopped: a time limit, a cancel) is it the worker's clock, and the
metrics say so. The queue wait ends when the worker first hears of the prompt running (for a
prompt taken over from a lost attempt, when ComfyUI says it began: then the clocks of two
machines, as close as they are kept). Model
loads are what `RunTimes` measured of the loader nodes: null when none ran (all cached), never
a guess.
"""

from __future__ import annotations

import time
from typing import Literal

from ..comfy.messages import HistoryEntry
from ..models import Job, JobMetrics, now
from .timing import RunTimes

_ENDINGS = ("execution_success", "execution_error", "execution_interrupted")


def comfy_execution_seconds(entry: HistoryEntry | None) -> float | None:
    """Seconds from the prompt's `execution_start` to its final message, by ComfyUI's clock."""
    start, end = _stamps(entry)
    if start is None or end is None or end < start:
        return None
    return (end - start) / 1000


def comfy_execution_began_at(entry: HistoryEntry | None) -> float | None:
    """When ComfyUI began the prompt (Unix seconds: its `execution_start` timestamp)."""
    start, _ = _stamps(entry)
    return start / 1000 if start is not None else None


def _stamps(entry: HistoryEntry | None) -> tuple[float | None, float | None]:
    """The timestamps (ms) of the prompt's `execution_start` and of its final message."""
    start = end = None
    for name, data in entry.status.messages if entry is not None else []:
        stamp = data.get("timestamp")
        if not isinstance(stamp, int | float) or isinstance(stamp, bool):
            continue
        if name == "execution_start":
            start = stamp
        elif name in _ENDINGS:
            end = stamp
    return start, end


class Meter:
    """Told when ComfyUI began and ended one attempt's prompt; `metrics()` says what it used."""

    def __init__(self) -> None:
        self.began_at: float | None = None  # wall clock, as the job's created_at
        self._began: float | None = None  # monotonic, as the two below
        self._ended: float | None = None
        self.times: RunTimes | None = None  # the loader nodes' times, once the prompt is queued
        #: the prompt was queued by an earlier attempt whose worker was lost: this one heard of
        #: it running late, so its wait ends when ComfyUI says it began
        self.took_over = False

    def began(self) -> None:
        """ComfyUI began the prompt (its first message after it was queued)."""
        if self.began_at is None:
            self.began_at, self._began = now(), time.monotonic()

    def ended(self) -> None:
        if self._ended is None:
            self._ended = time.monotonic()

    def metrics(
        self, job: Job, entry: HistoryEntry | None, backend: str | None
    ) -> JobMetrics | None:
        """The attempt's metrics; None when ComfyUI never began its prompt."""
        execution = comfy_execution_seconds(entry)
        clock: Literal["comfyui", "worker"] = "comfyui"
        if execution is None and self._began is not None:
            self.ended()
            execution, clock = (self._ended or time.monotonic()) - self._began, "worker"
        if execution is None:
            return None
        began_at = self.began_at if self.began_at is not None else now() - execution
        if self.took_over and clock == "comfyui":
            began_at = comfy_execution_began_at(entry) or began_at
        switch = self.times.switch if self.times is not None else None
        return JobMetrics(
            queue_wait_seconds=round(max(began_at - job.created_at, 0.0), 6),
            execution_seconds=round(max(execution, 0.0), 6),
            execution_clock=clock,
            model_switch_seconds=round(switch, 6) if switch is not None else None,
            backend=backend,
        )
