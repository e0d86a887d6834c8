"""The shared job counters: what every process adds to one Redis hash for `/metrics`.

Workers cannot be scraped (a Heroku worker dyno has no port), so job numbers are added to the
hash `formy:metrics` in the same step as the event they count (the job store's script does it),
and the web process shows them. Hash fields: `submitted:<workflow>`,
`finished:<workflow>:<status>`, the GPU-seconds of jobs that ran (`gpu_seconds:<workflow>`,
`backend_gpu_seconds:<backend>`, `backend_jobs:<backend>`, and the model loads measured,
`model_switch_seconds:<backend>`, `model_switches:<backend>`), and per histogram
`<name>:<workflow>:le:<bound>` (cumulative, as Prometheus wants them), `:sum` and `:count`.
Workflow names are catalogue names (`[a-z][a-z0-9_]*`) and backends the configured servers'
labels, which keeps the label set bounded: no user is ever a label (per-user usage is in
`usage`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..models import Job

INF = math.inf
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, INF)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, INF)


@dataclass(frozen=True)
class SharedHistogram:
    """A histogram kept in the hash: its field prefix, its metric name and help, its bounds."""

    prefix: str
    name: str
    help: str
    bounds: tuple[float, ...]


HISTOGRAMS: tuple[SharedHistogram, ...] = (
    SharedHistogram(
        "duration",
        "formy_job_duration_seconds",
        "Seconds a job ran (its last attempt).",
        DURATION_BUCKETS,
    ),
    SharedHistogram(
        "queue_wait",
        "formy_job_queue_wait_seconds",
        "Seconds from submission to the start of the job's last attempt.",
        QUEUE_WAIT_BUCKETS,
    ),
)

#: (hash field, amount) pairs added to the hash atomically with the event they count (an int
#: with HINCRBY, a float with HINCRBYFLOAT)
Counts = list[tuple[str, int | float]]


def submitted_counts(workflow: str) -> Counts:
    """One accepted job of `workflow`."""
    return [(f"submitted:{workflow}", 1)]


def finished_counts(
    workflow: str, status: str, duration: float | None, queue_wait: float | None
) -> Counts:
    """One job that reached its final `status`, and its timings when known."""
    counts: Counts = [(f"finished:{workflow}:{status}", 1)]
    if duration is not None:
        counts += _observe(f"duration:{workflow}", DURATION_BUCKETS, duration)
    if queue_wait is not None:
        counts += _observe(f"queue_wait:{workflow}", QUEUE_WAIT_BUCKETS, queue_wait)
    return counts


def job_finished_counts(job: Job) -> Counts:
    """A final job; duration = finished − started, queue wait = started − created."""
    started, finished = job.started_at, job.finished_at
    duration = finished - started if started is not None and finished is not None else None
    queue_wait = started - job.created_at if started is not None else None
    return finished_counts(job.workflow, job.status, duration, queue_wait) + gpu_counts(job)


def gpu_counts(job: Job) -> Counts:
    """What a final job that ran on ComfyUI used: its GPU-seconds by workflow and by backend,
    and its model loads when they were measured."""
    metrics = job.metrics
    if metrics is None or metrics.execution_seconds is None:
        return []
    gpu = float(metrics.execution_seconds)
    counts: Counts = [(f"gpu_seconds:{job.workflow}", gpu)]
    if metrics.backend:
        counts += [(f"backend_gpu_seconds:{metrics.backend}", gpu)]
        counts += [(f"backend_jobs:{metrics.backend}", 1)]
        if metrics.model_switch_seconds is not None:
            switch = float(metrics.model_switch_seconds)
            counts += [(f"model_switch_seconds:{metrics.backend}", switch)]
            counts += [(f"model_switches:{metrics.backend}", 1)]
    return counts


def _observe(prefix: str, bounds: Sequence[float], value: float) -> Counts:
    value = max(value, 0.0)  # clocks of different machines may disagree by a little
    counts: Counts = [(f"{prefix}:le:{le(bound)}", 1) for bound in bounds if value <= bound]
    return [*counts, (f"{prefix}:sum", float(value)), (f"{prefix}:count", 1)]


def le(bound: float) -> str:
    """A bucket bound as Prometheus writes it: `0.5`, `1.0`, `+Inf`."""
    return "+Inf" if bound == INF else repr(float(bound))
