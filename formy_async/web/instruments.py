"""The web process's Prometheus registry: its own metrics, and the service's shared ones.

The shared ones (job counters and histograms every process adds to Redis, queue depth, jobs in
flight, workers, backend slots) are read by a scrape into a `Snapshot`; prometheus_client
collectors are synchronous, so the scrape first awaits the snapshot and then lets the collector
yield from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping

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

from ..store.counters import HISTOGRAMS, INF, SharedHistogram, le
from ..store.status import Snapshot

RELAY_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, INF)
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
        for histogram in HISTOGRAMS:
            yield _histogram(snap.fields, histogram)
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
    by_label = {
        kind: CounterMetricFamily(name, doc, labels=labels)
        for kind, (name, doc, labels) in _GPU_COUNTERS.items()
    }
    for name, value in sorted(fields.items()):
        kind, _, rest = name.partition(":")
        if kind == "submitted":
            submitted.add_metric([rest], value)
        elif kind == "finished":
            workflow, _, status = rest.rpartition(":")
            finished.add_metric([workflow, status], value)
        elif kind in by_label:
            by_label[kind].add_metric([rest], value)
    yield submitted
    yield finished
    yield from by_label.values()


#: counters of what the jobs that ran used, by hash field kind (see counters): name, help, label
_GPU_COUNTERS: dict[str, tuple[str, str, list[str]]] = {
    "gpu_seconds": (
        "formy_gpu_seconds",
        "Seconds ComfyUI executed jobs (by its own clock), by workflow.",
        ["workflow"],
    ),
    "backend_gpu_seconds": (
        "formy_backend_gpu_seconds",
        "Seconds ComfyUI executed jobs, by backend.",
        ["backend"],
    ),
    "backend_jobs": ("formy_backend_jobs", "Jobs that ran, by backend.", ["backend"]),
    "model_switch_seconds": (
        "formy_model_switch_seconds",
        "Seconds loader nodes ran (models loaded), by backend.",
        ["backend"],
    ),
    "model_switches": (
        "formy_model_switches",
        "Jobs that loaded models (a loader node not cached), by backend.",
        ["backend"],
    ),
}


def _histogram(fields: Mapping[str, float], histogram: SharedHistogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(histogram.name, histogram.help, labels=["workflow"])
    prefix = histogram.prefix
    head = f"{prefix}:"
    workflows = sorted(
        k[len(head) : -len(":count")] for k in fields if k.startswith(head) and k.endswith(":count")
    )
    for workflow in workflows:
        base = f"{prefix}:{workflow}"
        buckets = [(le(b), fields.get(f"{base}:le:{le(b)}", 0.0)) for b in histogram.bounds]
        family.add_metric([workflow], buckets, fields.get(f"{base}:sum", 0.0))
    return family


def _gauge(name: str, doc: str, label: str, values: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


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
