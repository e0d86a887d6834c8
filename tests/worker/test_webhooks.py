"""Webhook delivery to a real receiver (job store on Redis), with retries, as arq runs it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from arq import Retry
from arq.connections import create_pool
from arq.jobs import Job as ArqJob
from arq.worker import Worker, func
from redis.asyncio import Redis

from formy_async.client.webhooks import verify
from formy_async.models import Done, Job, JobView, Submitted
from formy_async.settings import Settings
from formy_async.store.connections import arq_redis_settings, job_deserializer, job_serializer
from formy_async.store.jobs import JobStore
from formy_async.store.queue import DELIVER_WEBHOOK, RunQueue
from formy_async.webhook_urls import check_webhook_url
from formy_async.worker import webhooks
from formy_async.worker.webhooks import deliver_webhook

from ..conftest import free_port
from ..test_webhook_urls import fake_resolver

SECRET = "webhook-test-secret-0123456789abcdef"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering the scripted statuses (then the last one)."""

    statuses: list[int]
    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((await request.read(), dict(request.headers)))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Receiver]]:
    runners: list[web.AppRunner] = []

    async def elsewhere(request: web.Request) -> web.Response:
        raise AssertionError("a redirect was followed")

    async def start(*statuses: int) -> Receiver:
        rec = Receiver(list(statuses) or [200], port=free_port())
        app = web.Application()
        app.router.add_post("/hook", rec.handle)
        app.router.add_route("*", "/elsewhere", elsewhere)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", rec.port).start()
        runners.append(runner)
        return rec

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def store(redis: Redis) -> JobStore:
    return JobStore(redis, ttl=600)


async def finished_job(store: JobStore, webhook_url: str | None) -> Job:
    job = Job(id="hook1", workflow="upscale", params={"scale": 2}, webhook_url=webhook_url)
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    job.status, job.progress, job.finished_at = "done", 100, job.created_at + 3
    await store.append(job, Done(job_id=job.id, outputs=[]))
    return job


def worker_ctx(store: JobStore, job_try: int = 1, **settings: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "secret_key": SECRET,
        "webhook_secret": SECRET,
        "webhook_allow_private": True,
        "webhook_max_attempts": 3,
        **settings,
    }
    # only `settings` and `store` of a WorkerContext are used by deliveries
    return {
        "formy": SimpleNamespace(settings=Settings(**values), store=store, http=None),
        "job_try": job_try,
    }


async def run_tries(ctx: dict[str, Any], limit: int = 10) -> tuple[str, list[float]]:
    """Call deliver_webhook as arq would: again with job_try + 1 after each Retry."""
    defers: list[float] = []
    for _ in range(limit):
        try:
            return await deliver_webhook(ctx, "hook1"), defers
        except Retry as retry:
            defers.append((retry.defer_score or 0) / 1000)
            ctx["job_try"] += 1
    raise AssertionError("deliver_webhook never stopped retrying")


async def test_the_receiver_gets_the_signed_job(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(200)
    job = await finished_job(store, rec.url)
    assert await deliver_webhook(worker_ctx(store), job.id) == "delivered"
    ((body, headers),) = rec.requests
    assert json.loads(body) == json.loads(JobView.of(await store.get(job.id)).model_dump_json())
    assert json.loads(body)["status"] == "done"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "formy-async-webhook"
    assert verify(body, SECRET, headers["X-Formy-Timestamp"], headers["X-Formy-Signature"])


async def test_the_receiver_never_sees_where_the_job_ran(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(200)
    job = Job(id="hook1", workflow="upscale", params={}, webhook_url=rec.url, attempt=2)
    job.backend = "http://operator:hunter2@gpu-1:8188"
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    job.status, job.finished_at = "done", job.created_at + 1
    await store.append(job, Done(job_id=job.id, outputs=[]))
    assert await deliver_webhook(worker_ctx(store), job.id) == "delivered"
    ((body, _),) = rec.requests
    assert not {"backend", "attempt", "losses", "graph"} & set(json.loads(body))
    assert b"hunter2" not in body


async def test_webhooks_are_signed_with_their_own_secret_never_the_secret_key(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(200)
    await finished_job(store, rec.url)
    ctx = worker_ctx(store, webhook_secret="hooks-only")
    assert await deliver_webhook(ctx, "hook1") == "delivered"
    ((body, headers),) = rec.requests
    assert verify(body, "hooks-only", headers["X-Formy-Timestamp"], headers["X-Formy-Signature"])
    assert not verify(body, SECRET, headers["X-Formy-Timestamp"], headers["X-Formy-Signature"])


async def test_failures_are_retried_with_backoff_until_a_2xx(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(500, 500, 200)
    await finished_job(store, rec.url)
    async with aiohttp.ClientSession() as shared:  # the worker's session
        ctx = worker_ctx(store, webhook_max_attempts=6)
        ctx["formy"].http = shared
        with structlog.testing.capture_logs() as logs:
            outcome, defers = await run_tries(ctx)
        assert not shared.closed
    assert (outcome, defers, len(rec.requests)) == ("delivered", [1, 2], 3)
    assert [e["event"] for e in logs] == ["webhook_retry", "webhook_retry", "webhook_delivered"]
    assert all(e["job_id"] == "hook1" for e in logs)
    assert logs[0]["error"] == "HTTP 500"
    signatures = {headers["X-Formy-Signature"] for _, headers in rec.requests}
    assert SECRET not in repr(logs)
    assert "/hook" not in repr(logs)  # the host only: a URL's path may hold a token
    assert not any(s.removeprefix("sha256=") in repr(logs) for s in signatures)


async def test_a_receiver_that_always_fails_is_given_up_on_without_raising(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(503)
    await finished_job(store, rec.url)
    ctx = worker_ctx(store, webhook_max_attempts=5)
    with structlog.testing.capture_logs() as logs:
        outcome, defers = await run_tries(ctx)
    assert (outcome, defers, len(rec.requests)) == ("failed", [1, 2, 4, 8], 5)
    assert logs[-1]["event"] == "webhook_failed"
    assert logs[-1]["log_level"] == "warning"
    # arq's job_try can outrun the setting (a worker lost mid-try): still no raise
    ctx["job_try"] = 9
    assert await deliver_webhook(ctx, "hook1") == "failed"


async def test_redirects_are_not_followed(store: JobStore, receiver: Callable[..., Any]) -> None:
    rec = await receiver(302)
    await finished_job(store, rec.url)
    with pytest.raises(Retry):
        await deliver_webhook(worker_ctx(store), "hook1")
    assert len(rec.requests) == 1


async def test_connection_errors_are_retried(store: JobStore) -> None:
    await finished_job(store, f"http://127.0.0.1:{free_port()}/hook")  # nothing listens
    with structlog.testing.capture_logs() as logs:
        outcome, defers = await run_tries(worker_ctx(store))
    assert (outcome, defers) == ("failed", [1, 2])
    assert "ClientConnectorError" in logs[0]["error"]


async def test_a_receiver_that_hangs_times_out(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hang)
    runner, port = web.AppRunner(app), free_port()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setattr(webhooks, "DELIVERY_TIMEOUT", 0.2)
    try:
        await finished_job(store, f"http://127.0.0.1:{port}/hook")
        with pytest.raises(Retry):
            await deliver_webhook(worker_ctx(store), "hook1")
    finally:
        release.set()
        await runner.cleanup()


async def test_private_urls_are_refused_at_delivery_without_the_allowance(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(200)
    await finished_job(store, rec.url)
    with structlog.testing.capture_logs() as logs:
        outcome = await deliver_webhook(worker_ctx(store, webhook_allow_private=False), "hook1")
    assert outcome == "refused"  # no Retry: the policy will not change its mind
    assert rec.requests == []
    assert logs[0]["event"] == "webhook_failed"
    assert logs[0]["code"] == "webhook_url_refused"


async def test_a_name_that_now_resolves_privately_is_refused_at_delivery(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_resolver(monkeypatch, {"hooks.example.com": ["93.184.216.34"]})
    url = await check_webhook_url("http://hooks.example.com/hook", allow_private=False)
    await finished_job(store, url)
    fake_resolver(monkeypatch, {"hooks.example.com": ["169.254.169.254"]})  # DNS changed
    ctx = worker_ctx(store, webhook_allow_private=False)
    assert await deliver_webhook(ctx, "hook1") == "refused"
    assert lookups == ["hooks.example.com"]


async def test_a_name_is_resolved_once_and_its_checked_address_used(
    store: JobStore, receiver: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = await receiver(200)
    # 127.0.0.2 refuses the connection (the receiver listens on 127.0.0.1 only): the next
    # checked address is tried; aiohttp never looks the name up itself
    lookups = fake_resolver(monkeypatch, {"hooks.test": ["127.0.0.2", "127.0.0.1"]})
    await finished_job(store, f"http://hooks.test:{rec.port}/hook")
    assert await deliver_webhook(worker_ctx(store), "hook1") == "delivered"
    assert lookups == ["hooks.test"]
    ((_, headers),) = rec.requests
    assert headers["Host"] == f"hooks.test:{rec.port}"


async def test_localhost_is_delivered_to_with_the_allowance(
    store: JobStore, receiver: Callable[..., Any]
) -> None:
    rec = await receiver(204)
    await finished_job(store, f"http://localhost:{rec.port}/hook")  # ::1 first, maybe: next one
    assert await deliver_webhook(worker_ctx(store), "hook1") == "delivered"
    ((_, headers),) = rec.requests
    assert headers["Host"] == f"localhost:{rec.port}"


async def test_jobs_without_a_webhook_or_gone_are_skipped(store: JobStore) -> None:
    await finished_job(store, None)
    assert await deliver_webhook(worker_ctx(store), "hook1") == "skipped"
    assert await deliver_webhook(worker_ctx(store), "no-such-job") == "skipped"


async def test_only_final_jobs_with_a_webhook_are_queued(store: JobStore, redis_url: str) -> None:
    pool = await create_pool(arq_redis_settings(Settings(redis_url=redis_url)))
    try:
        running = Job(id="j2", workflow="upscale", params={}, webhook_url="http://x.test/")
        running.status = "processing"
        assert not await RunQueue(pool).enqueue_webhook(running)
        assert not await RunQueue(pool).enqueue_webhook(await finished_job(store, None))
        assert await pool.zcard("arq:queue") == 0
    finally:
        await pool.aclose()


async def test_a_real_arq_worker_retries_the_delivery(
    store: JobStore, receiver: Callable[..., Any], redis_url: str
) -> None:
    """Registered as the lead will register it: arq's Retry and job_try drive the tries."""
    rec = await receiver(500, 200)
    await finished_job(store, rec.url)
    settings = Settings(
        redis_url=redis_url,
        secret_key=SECRET,
        webhook_secret=SECRET,
        webhook_allow_private=True,
        webhook_max_attempts=6,
    )

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["formy"] = SimpleNamespace(settings=settings, store=store, http=None)

    worker = Worker(
        functions=[
            func(
                deliver_webhook,
                name=DELIVER_WEBHOOK,
                max_tries=settings.webhook_max_attempts + 1,
                timeout=30,
            )
        ],
        redis_settings=arq_redis_settings(settings),
        on_startup=startup,
        burst=True,
        poll_delay=0.05,
        handle_signals=False,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    pool = await create_pool(
        arq_redis_settings(settings),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    try:
        job = await store.get("hook1")
        assert await RunQueue(pool).enqueue_webhook(job)
        assert not await RunQueue(pool).enqueue_webhook(job)  # once per job
        await asyncio.wait_for(worker.main(), 20)
        info = await ArqJob(
            f"{DELIVER_WEBHOOK}:hook1", pool, _deserializer=job_deserializer
        ).result_info()
        assert info is not None
        assert (info.success, info.result, info.job_try) == (True, "delivered", 2)
    finally:
        await worker.close()
        await pool.aclose()
    assert len(rec.requests) == 2
