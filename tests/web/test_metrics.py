"""GET /metrics: shared job metrics from Redis, live values, the web process's own, the token."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from formy_async.errors import TooManyRequests
from formy_async.models import Cancelled, Done, Job, Started, Submitted
from formy_async.store import keys
from formy_async.store.counters import Counts, finished_counts, submitted_counts
from formy_async.store.hub import event_ts
from formy_async.store.jobs import JobStore, Quota
from formy_async.store.leases import Heartbeat, Leases
from formy_async.store.queue import RunQueue
from formy_async.store.status import ServiceStatus
from formy_async.web.app import create_app
from formy_async.web.context import METRICS
from formy_async.web.instruments import SnapshotCollector, WebMetrics

from ..conftest import stack_settings

pytestmark = pytest.mark.redis

#: a database of these tests' own, emptied before and after each one

Scrape = Callable[..., Any]


async def record(db: Redis, counts: Counts) -> None:
    """Put counts in the shared hash the way the job store's append script does."""
    for field, amount in counts:
        if isinstance(amount, float):
            await db.hincrbyfloat(keys.METRICS, field, amount)  # type: ignore[misc]
        else:
            await db.hincrby(keys.METRICS, field, amount)  # type: ignore[misc]


@pytest.fixture
def db_url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def db(redis: Redis) -> Redis:
    return redis


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def make_app(
    db_url: str, simulator_url: str, tmp_path: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[tuple[web.Application, str]]]:
    @contextlib.asynccontextmanager
    async def build(
        routes: tuple[web.RouteDef, ...] = (), **extra: Any
    ) -> AsyncIterator[tuple[web.Application, str]]:
        comfyui_url = extra.pop("comfyui_url", simulator_url)
        settings = stack_settings(db_url, comfyui_url, tmp_path, **extra)
        app = create_app(settings)  # it sets the metrics up
        app.add_routes(routes)
        async with serving(app, settings.port) as base:
            yield app, base

    return build


@pytest.fixture
async def served(make_app: Any) -> AsyncIterator[tuple[web.Application, str]]:
    async with make_app() as served:
        yield served


async def scrape(base: str, token: str | None = None) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of GET /metrics, keyed by (name, labels)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/metrics", headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def buckets(
    samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str
) -> dict[str, float]:
    return {
        dict(key)["le"]: v
        for (sample, key), v in samples.items()
        if sample == f"{name}_bucket" and {k: x for k, x in key if k != "le"} == labels
    }


# --- shared job metrics, recorded in Redis ------------------------------------------------------


async def test_submitted_and_finished_jobs_are_counted_by_workflow_and_status(
    served: tuple[web.Application, str], db: Redis
) -> None:
    for workflow in ("upscale", "upscale", "text_to_image"):
        await record(db, submitted_counts(workflow))
    await record(db, finished_counts("upscale", "done", 1.5, 0.2))
    await record(db, finished_counts("upscale", "done", 2.5, 0.2))
    await record(db, finished_counts("upscale", "failed", 0.7, 0.2))
    await record(db, finished_counts("text_to_image", "cancelled", None, None))

    samples = await scrape(served[1])

    assert value(samples, "formy_jobs_submitted_total", workflow="upscale") == 2
    assert value(samples, "formy_jobs_submitted_total", workflow="text_to_image") == 1
    finished = "formy_jobs_finished_total"
    assert value(samples, finished, workflow="upscale", status="done") == 2
    assert value(samples, finished, workflow="upscale", status="failed") == 1
    assert value(samples, finished, workflow="text_to_image", status="cancelled") == 1


async def test_job_duration_is_a_cumulative_histogram(
    served: tuple[web.Application, str], db: Redis
) -> None:
    for seconds in (0.5, 0.7, 3.0, 700.0):  # 0.5 lands in le="0.5": buckets are ≤
        await record(db, finished_counts("upscale", "done", seconds, None))

    samples = await scrape(served[1])

    name = "formy_job_duration_seconds"
    assert buckets(samples, name, workflow="upscale") == {
        "0.5": 1, "1.0": 2, "2.0": 2, "5.0": 3, "10.0": 3, "30.0": 3,
        "60.0": 3, "120.0": 3, "300.0": 3, "600.0": 3, "+Inf": 4,
    }  # fmt: skip
    assert value(samples, f"{name}_count", workflow="upscale") == 4
    assert value(samples, f"{name}_sum", workflow="upscale") == pytest.approx(704.2)
    assert not buckets(samples, "formy_job_queue_wait_seconds", workflow="upscale")


async def test_queue_wait_is_a_histogram_of_its_own(
    served: tuple[web.Application, str], db: Redis
) -> None:
    await record(db, finished_counts("upscale", "done", None, 0.03))
    await record(db, finished_counts("upscale", "failed", None, 12.0))

    samples = await scrape(served[1])

    name = "formy_job_queue_wait_seconds"
    assert buckets(samples, name, workflow="upscale") == {
        "0.01": 0, "0.05": 1, "0.1": 1, "0.5": 1, "1.0": 1, "5.0": 1,
        "10.0": 1, "30.0": 2, "60.0": 2, "+Inf": 2,
    }  # fmt: skip
    assert value(samples, f"{name}_sum", workflow="upscale") == pytest.approx(12.03)
    assert value(samples, f"{name}_count", workflow="upscale") == 2


async def test_the_store_counts_a_job_with_its_events(db: Redis) -> None:
    store = JobStore(db, ttl=60)
    job = Job(id="j1", workflow="upscale", params={}, created_at=100.0)
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    job.status, job.started_at, job.finished_at = "done", 101.5, 104.0
    await store.append(job, Done(job_id=job.id, outputs=[]))

    fields = await ServiceStatus(db, []).counters()

    assert fields["submitted:upscale"] == 1
    assert fields["finished:upscale:done"] == 1
    assert fields["duration:upscale:sum"] == 2.5
    assert fields["duration:upscale:count"] == 1
    assert fields["queue_wait:upscale:sum"] == 1.5
    assert fields["queue_wait:upscale:count"] == 1


async def test_a_job_that_never_started_has_no_timings(db: Redis) -> None:
    store = JobStore(db, ttl=60)
    job = Job(id="j1", workflow="upscale", params={})
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    job.status = "cancelled"
    await store.append(job, Cancelled(job_id=job.id))

    fields = await ServiceStatus(db, []).counters()

    assert fields["finished:upscale:cancelled"] == 1
    assert not [name for name in fields if name.startswith(("duration", "queue_wait"))]


async def test_a_refused_submission_is_not_counted(db: Redis) -> None:
    store = JobStore(db, ttl=60)
    await store.create(
        Job(id="j1", workflow="upscale", params={}), Submitted(job_id="j1", workflow="upscale")
    )

    with pytest.raises(TooManyRequests):
        await store.create(
            Job(id="j2", workflow="upscale", params={}),
            Submitted(job_id="j2", workflow="upscale"),
            Quota(jobs=1),
        )

    assert (await ServiceStatus(db, []).counters())["submitted:upscale"] == 1


# --- live values --------------------------------------------------------------------------------


async def test_queue_depth_counts_the_jobs_in_arqs_queue(
    served: tuple[web.Application, str], db: Redis
) -> None:
    queue = RunQueue(db)
    priorities = ["high", "normal", "normal", "low"]
    for n, priority in enumerate(priorities):
        job = Job(id=f"q{n}", workflow="w", params={}, priority=priority)  # type: ignore[arg-type]
        assert await queue.enqueue(job, expires=60)

    samples = await scrape(served[1])

    depth = {p: value(samples, "formy_queue_depth", priority=p) for p in ("high", "normal", "low")}
    assert depth == {"high": 1, "normal": 2, "low": 1}


async def test_jobs_not_yet_final_are_counted_by_status(
    served: tuple[web.Application, str], db: Redis
) -> None:
    store = JobStore(db, ttl=60)
    for job_id in ("p1", "p2", "r1", "d1"):
        job = Job(id=job_id, workflow="upscale", params={}, user="alice")
        await store.create(job, Submitted(job_id=job_id, workflow="upscale"))
        if job_id.startswith(("r", "d")):
            job.status = "processing"
            await store.append(job, Started(job_id=job_id, prompt_id="x"))
    finished = await store.get("d1")
    finished.status = "done"
    await store.append(finished, Done(job_id="d1", outputs=[]))

    samples = await scrape(served[1])

    assert value(samples, "formy_jobs", status="pending") == 2
    assert value(samples, "formy_jobs", status="processing") == 1


async def test_workers_and_pool_slots_give_busy_slots_and_capacity(
    make_app: Any, db: Redis
) -> None:
    await Leases(db, Heartbeat(worker_id="w1", max_jobs=4), ttl=10).renew(["a", "b"])
    backend = "http://operator:hunter2@gpu-1:8188"
    live, gone = (time.time() + 60) * 1000, (time.time() - 60) * 1000
    await db.zadd(keys.backend_slots(backend), {"a": live, "b": live, "old": gone})

    async with make_app(comfyui_url=f"{backend}#capacity=4") as (_, base):
        samples = await scrape(base)

    assert value(samples, "formy_workers") == 1
    assert value(samples, "formy_backend_busy_slots", backend="http://gpu-1:8188") == 2
    assert value(samples, "formy_backend_capacity", backend="http://gpu-1:8188") == 4
    assert not any("hunter2" in str(labels) for _, labels in samples)


async def test_backend_up_says_whether_comfyui_answers(
    served: tuple[web.Application, str], simulator_url: str
) -> None:
    samples = await scrape(served[1])

    assert value(samples, "formy_backend_up", backend=simulator_url.rstrip("/")) == 1
    assert value(samples, "formy_redis_up") == 1


def test_without_redis_only_redis_up_is_shown() -> None:
    collector = SnapshotCollector()
    collector.update(None)

    families = list(collector.collect())

    assert [(f.name, [s.value for s in f.samples]) for f in families] == [("formy_redis_up", [0])]


# --- the web process's own metrics --------------------------------------------------------------


async def test_http_requests_are_counted_by_route_template(make_app: Any) -> None:
    async def thing(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["thing_id"]})

    async with make_app(routes=(web.get("/things/{thing_id}", thing),)) as (_, base):
        async with aiohttp.ClientSession() as session:
            for path in ("/things/one", "/things/two", "/no/such/route"):
                async with session.get(base + path) as r:
                    assert r.status == (404 if path.startswith("/no") else 200)
        samples = await scrape(base)

    requests = "formy_http_requests_total"
    route = "/things/{thing_id}"
    assert value(samples, requests, method="GET", route=route, status="200") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    duration = "formy_http_request_duration_seconds_count"
    assert value(samples, duration, method="GET", route=route) == 2
    assert not any("one" in dict(labels).get("route", "") for _, labels in samples)


async def test_websocket_hooks_count_connections_and_relay_lag(
    served: tuple[web.Application, str],
) -> None:
    app, base = served
    metrics = app[METRICS]
    metrics.connection_opened()
    metrics.connection_opened()
    metrics.connection_closed()
    metrics.event_sent(time.time() - 0.3)

    samples = await scrape(base)

    assert value(samples, "formy_websocket_connections") == 1
    assert value(samples, "formy_events_relayed_total") == 1
    lag = buckets(samples, "formy_event_relay_lag_seconds")
    assert lag["0.25"] == 0 and lag["0.5"] == 1 and lag["+Inf"] == 1


def test_event_ts_reads_the_ts_of_a_raw_event() -> None:
    event = Submitted(job_id="a" * 32, workflow="upscale", seq=7)

    assert event_ts(event.model_dump_json()) == event.ts


def test_each_app_has_a_registry_of_its_own() -> None:
    first, second = WebMetrics(), WebMetrics()
    first.connection_opened()

    assert first.registry.get_sample_value("formy_websocket_connections") == 1
    assert second.registry.get_sample_value("formy_websocket_connections") == 0
    assert REGISTRY.get_sample_value("formy_websocket_connections") is None


# --- the token ----------------------------------------------------------------------------------


async def test_the_metrics_token_is_required_when_set(make_app: Any) -> None:
    async with make_app(metrics_token="scrape-me") as (_, base), aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            async with s.get(f"{base}/metrics", headers=headers) as r:
                assert r.status == 401
                body = await r.json()
        assert body["error"]["code"] == "unauthorized"


async def test_the_metrics_token_is_accepted(make_app: Any) -> None:
    async with make_app(metrics_token="scrape-me") as (_, base):
        samples = await scrape(base, token="scrape-me")

    assert value(samples, "formy_redis_up") == 1
