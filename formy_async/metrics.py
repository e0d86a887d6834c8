"""Prometheus metrics: job counters and histograms shared in Redis, and a web process's own.

Workers cannot be scraped (a Heroku worker dyno has no port), so every process adds its job
numbers to one Redis hash, `formy:metrics`, and the web process exposes them, together with
live values read at scrape time (queue depth, jobs in flight, worker heartbeats) and its own
in-process metrics (WebSockets, event relay, HTTP). prometheus_client collectors are
synchronous, so a scrape first awaits `snapshot()` and then lets the collector yield from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from . import keys
from .models import Job
from .queue import priority_ranges
from .settings import BackendSpec

log = structlog.get_logger()

#: the hash every process adds its job counters and histogram buckets to
METRICS_KEY = f"{keys.PREFIX}:metrics"

INF = math.inf
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, INF)
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, INF)
RELAY_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, INF)


#: the shared histograms: hash field prefix, metric name, help, bucket bounds
_HISTOGRAMS: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    (
        "duration",
        "formy_job_duration_seconds",
        "Seconds a job ran (its last attempt).",
        DURATION_BUCKETS,
    ),
    (
        "queue_wait",
        "formy_job_queue_wait_seconds",
        "Seconds from submission to the start of the job's last attempt.",
        QUEUE_WAIT_BUCKETS,
    ),
)

_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- recording, from any process ---------------------------------------------------------------
# Hash fields: `submitted:<workflow>`, `finished:<workflow>:<status>`, and per histogram
# `<name>:<workflow>:le:<bound>` (cumulative, as Prometheus wants them), `:sum` and `:count`.
# Workflow names are catalogue names (`[a-z][a-z0-9_]*`), which keeps the label set bounded.


#: (hash field, amount) pairs added to the hash atomically with the event they count (the job
#: store's append script adds them; an int with HINCRBY, a float with HINCRBYFLOAT)
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
    return finished_counts(job.workflow, job.status, duration, queue_wait)


def _observe(prefix: str, bounds: Sequence[float], value: float) -> Counts:
    value = max(value, 0.0)  # clocks of different machines may disagree by a little
    counts: Counts = [(f"{prefix}:le:{_le(bound)}", 1) for bound in bounds if value <= bound]
    return [*counts, (f"{prefix}:sum", float(value)), (f"{prefix}:count", 1)]


# --- live values, read at scrape time -----------------------------------------------------------


class _JobStatusOnly(BaseModel):
    """Just the status of a job record (validating the whole record would be wasted work)."""

    status: str


class Heartbeat(BaseModel):
    """The part of a worker's heartbeat (see recovery) that metrics need."""

    worker_id: str
    running: list[str] = []
    max_jobs: int = 0
    comfyui: str = "unknown"


@dataclass(frozen=True)
class Snapshot:
    """Everything the shared metrics show, read from Redis in one go."""

    fields: dict[str, float]
    queue_depth: dict[str, int]
    jobs: dict[str, int]
    workers: int
    busy_slots: dict[str, int]
    capacity: dict[str, int]
    backends_up: dict[str, bool] = field(default_factory=dict)


async def snapshot(
    redis: Redis,
    priorities: Mapping[str, tuple[float, float]] | None = None,
    backends: Sequence[BackendSpec] = (),
) -> Snapshot:
    """Read the shared counters and the live values (O(active jobs + workers))."""
    if priorities is None:
        priorities = priority_ranges()
    raw: dict[bytes | str, bytes | str] = await redis.hgetall(METRICS_KEY)  # type: ignore[misc]
    depth = {
        name: int(await redis.zcount(keys.ARQ_QUEUE, _score(low), _score(high)))
        for name, (low, high) in priorities.items()
    }
    heartbeats = await _heartbeats(redis)
    now_ms = time.time() * 1000
    busy, capacity = {}, {}
    for spec in backends:  # slots whose lease has not run out, as the pool shares them
        label = backend_label(spec.url)
        busy[label] = int(await redis.zcount(keys.backend_slots(spec.url), now_ms, "+inf"))
        capacity[label] = spec.capacity
    return Snapshot(
        fields={_text(k): float(v) for k, v in raw.items()},
        queue_depth=depth,
        jobs=await _job_counts(redis),
        workers=len(heartbeats),
        busy_slots=busy,
        capacity=capacity,
    )


async def _job_counts(redis: Redis, batch: int = 500) -> dict[str, int]:
    counts = {"pending": 0, "processing": 0}
    members = await redis.zrange(keys.active_jobs(), 0, -1)
    for start in range(0, len(members), batch):
        chunk = [keys.job(_text(m)) for m in members[start : start + batch]]
        for raw in await redis.mget(chunk):
            if raw is None:
                continue  # expired, or finished since the ZRANGE
            status = _JobStatusOnly.model_validate_json(raw).status
            if status in counts:
                counts[status] += 1
    return counts


async def _heartbeats(redis: Redis) -> list[Heartbeat]:
    # SCAN walks the whole keyspace (as /api/stats does); a set of worker ids would not
    names = [k async for k in redis.scan_iter(match=keys.WORKER_HEARTBEAT_PATTERN, count=1000)]
    beats = []
    for raw in await redis.mget(names) if names else []:
        if raw is None:
            continue  # expired since the SCAN
        try:
            beats.append(Heartbeat.model_validate_json(raw))
        except ValidationError:
            log.warning("metrics_heartbeat_unreadable")
    return beats


def backend_label(url: str) -> str:
    """A ComfyUI URL as a label: without credentials, which must not reach a dashboard."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it: `0.5`, `1.0`, `+Inf`."""
    return "+Inf" if bound == INF else repr(float(bound))


def _score(bound: float) -> str:
    return "-inf" if bound == -INF else "+inf" if bound == INF else repr(bound)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the collector ------------------------------------------------------------------------------


class SnapshotCollector:
    """Yields the shared metrics from the latest snapshot (set by the scrape before it renders)."""

    def __init__(self) -> None:
        self.latest: Snapshot | None = None

    def update(self, latest: Snapshot | None) -> None:
        """The snapshot to show; None when Redis could not be read (only `formy_redis_up 0`)."""
        self.latest = latest

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.latest))

    def _families(self, snap: Snapshot | None) -> Iterator[Metric]:
        up = 0 if snap is None else 1
        yield GaugeMetricFamily("formy_redis_up", "1 when Redis answered this scrape.", up)
        if snap is None:
            return
        yield from _counters(snap.fields)
        for prefix, name, doc, bounds in _HISTOGRAMS:
            yield _histogram(snap.fields, prefix, name, doc, bounds)
        yield _gauge("formy_queue_depth", "Jobs in the arq queue.", "priority", snap.queue_depth)
        yield _gauge("formy_jobs", "Jobs not yet final, by status.", "status", snap.jobs)
        yield GaugeMetricFamily("formy_workers", "Live workers (fresh heartbeats).", snap.workers)
        yield _gauge(
            "formy_backend_busy_slots",
            "Jobs the live workers run on each ComfyUI backend.",
            "backend",
            snap.busy_slots,
        )
        yield _gauge(
            "formy_backend_capacity",
            "Jobs the live workers on each ComfyUI backend may run at once.",
            "backend",
            snap.capacity,
        )
        yield _gauge(
            "formy_backend_up",
            "1 when the ComfyUI backend answers the web process.",
            "backend",
            {k: int(v) for k, v in snap.backends_up.items()},
        )


def _counters(fields: Mapping[str, float]) -> Iterator[Metric]:
    submitted = CounterMetricFamily(
        "formy_jobs_submitted", "Jobs accepted, by workflow.", labels=["workflow"]
    )
    finished = CounterMetricFamily(
        "formy_jobs_finished", "Jobs that reached a final state.", labels=["workflow", "status"]
    )
    for name, value in sorted(fields.items()):
        kind, _, rest = name.partition(":")
        if kind == "submitted":
            submitted.add_metric([rest], value)
        elif kind == "finished":
            workflow, _, status = rest.rpartition(":")
            finished.add_metric([workflow, status], value)
    yield submitted
    yield finished


def _histogram(
    fields: Mapping[str, float], prefix: str, name: str, doc: str, bounds: Sequence[float]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["workflow"])
    head = f"{prefix}:"
    workflows = sorted(
        k[len(head) : -len(":count")] for k in fields if k.startswith(head) and k.endswith(":count")
    )
    for workflow in workflows:
        base = f"{prefix}:{workflow}"
        buckets = [(_le(b), fields.get(f"{base}:le:{_le(b)}", 0.0)) for b in bounds]
        family.add_metric([workflow], buckets, fields.get(f"{base}:sum", 0.0))
    return family


def _gauge(name: str, doc: str, label: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


# --- a web process's own metrics ----------------------------------------------------------------


class WebMetrics:
    """The metrics of one web app, in a registry of its own (never prometheus_client's global).

    ws.py calls `connection_opened()` / `connection_closed()` around each socket and
    `event_sent(ts)` for each live event it relays; the HTTP middleware calls `request_done`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "formy_websocket_connections", "Open browser WebSockets.", registry=r
        )
        self.events_relayed = Counter(
            "formy_events_relayed", "Live job events sent to browser WebSockets.", registry=r
        )
        self.relay_lag = Histogram(
            "formy_event_relay_lag_seconds",
            "Seconds from an event being recorded (its ts) to its WebSocket send.",
            buckets=RELAY_LAG_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "formy_http_requests",
            "HTTP requests, by route template.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "formy_http_request_duration_seconds",
            "Seconds to answer an HTTP request.",
            ["method", "route"],
            registry=r,
        )
        self.shared = SnapshotCollector()
        r.register(self.shared)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def connection_opened(self) -> None:
        self.connections.inc()

    def connection_closed(self) -> None:
        self.connections.dec()

    def event_sent(self, ts: float) -> None:
        """A live event its worker recorded at `ts` (Unix seconds) was just sent to a socket."""
        self.events_relayed.inc()
        self.relay_lag.observe(max(time.time() - ts, 0.0))

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _HTTP_METHODS else "other"  # clients choose methods freely
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)


def event_ts(raw: str) -> float:
    """The `ts` of a raw event, read without parsing the whole JSON (it comes third)."""
    start = raw.index('"ts":') + 5
    return float(raw[start : raw.index(",", start)])
