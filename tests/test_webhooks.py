"""Webhooks: the URL check, signatures, and delivery to a real receiver (job store on Redis)."""

from __future__ import annotations

import asyncio
import json
import socket
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

from formy_async import webhooks
from formy_async.connections import arq_redis_settings, job_deserializer, job_serializer
from formy_async.errors import InvalidParams
from formy_async.jobstore import JobStore
from formy_async.models import Done, Job, JobView, Submitted
from formy_async.settings import Settings
from formy_async.webhooks import (
    DELIVER_WEBHOOK,
    check_webhook_url,
    deliver_webhook,
    enqueue_webhook,
    sign,
    signed_headers,
    verify,
)

from .conftest import free_port

SECRET = "webhook-test-secret-0123456789abcdef"

# --- the URL check --------------------------------------------------------------------------


def fake_resolver(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Make the running loop resolve names from `table` (others: unknown); returns the lookups."""
    lookups: list[str] = []

    async def getaddrinfo(host: str, port: Any, **_: Any) -> list[Any]:
        lookups.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {False: socket.AF_INET, True: socket.AF_INET6}
        return [(family[":" in ip], socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return lookups


async def refused(url: str, code: str = "webhook_url_refused") -> str:
    with pytest.raises(InvalidParams) as caught:
        await check_webhook_url(url, allow_private=False)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("[::1]", "loopback"),
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:169.254.169.254]", "metadata"),
        ("[2002:a00:1::]", "private"),  # 6to4 around 10.0.0.1
        ("[64:ff9b::a9fe:a9fe]", "metadata"),  # NAT64 around 169.254.169.254
    ],
)
async def test_non_public_addresses_are_refused(
    host: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_resolver(monkeypatch, {})
    message = await refused(f"http://{host}:8080/hook")
    assert reason in message
    assert lookups == []  # literals are judged as they are


async def test_localhost_is_refused_by_what_it_resolves_to() -> None:
    message = await refused("http://localhost/hook")  # resolved locally, no network needed
    assert "localhost resolves to" in message
    assert "loopback" in message


async def test_a_name_is_refused_when_any_of_its_addresses_is_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_resolver(
        monkeypatch,
        {
            "internal.example": ["10.1.2.3"],
            "metadata.example": ["169.254.169.254"],
            "mixed.example": ["93.184.216.34", "192.168.0.7"],
            "v6.example": ["2606:2800:220:1::1", "::1"],
            "decimal.example": ["127.0.0.1"],
        },
    )
    assert "private" in await refused("https://internal.example/hook")
    assert "metadata" in await refused("https://metadata.example/hook")
    assert "192.168.0.7" in await refused("https://mixed.example/hook")
    assert "loopback" in await refused("https://v6.example/hook")
    assert "loopback" in await refused("http://decimal.example/")


async def test_a_public_name_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, {"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    url = "https://Hooks.Example.COM/formy?x=1#part"
    assert await check_webhook_url(url, allow_private=False) == (
        "https://hooks.example.com/formy?x=1"
    )


async def test_a_public_literal_is_accepted_without_resolving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = fake_resolver(monkeypatch, {})
    url = "http://93.184.216.34:8443/hook"
    assert await check_webhook_url(url, allow_private=False) == url
    assert lookups == []


async def test_unresolvable_hosts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, {"empty.example": []})
    await refused("https://nowhere.example/hook", "webhook_url_unresolvable")
    await refused("https://empty.example/hook", "webhook_url_unresolvable")


async def test_a_lookup_that_hangs_is_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang(*_: Any, **__: Any) -> list[Any]:
        await asyncio.sleep(30)
        return []

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hang)
    monkeypatch.setattr(webhooks, "RESOLVE_TIMEOUT", 0.05)
    await refused("https://slow.example/hook", "webhook_url_unresolvable")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://93.184.216.34/hook", "http"),
        ("file:///etc/passwd", "http"),
        ("javascript:alert(1)", "http"),
        ("gopher://93.184.216.34:6379/_PING", "http"),
        ("http://user:pass@93.184.216.34/hook", "credentials"),
        ("http://user@93.184.216.34/hook", "credentials"),
        ("http:///hook", "host"),
        ("/relative/hook", "http"),
        ("http://93.184.216.34:99999/", "not a valid URL"),
        ("http://93.184.216.34/a b", "whitespace"),
        ("http://93.184.216.34/\r\nX-Injected: 1", "whitespace"),
        ("http://93.184.216.34/" + "a" * 2000, "longer than 2000"),
    ],
)
async def test_malformed_urls_are_invalid(url: str, why: str) -> None:
    assert why in await refused(url, "webhook_url_invalid")


async def test_the_allowance_lets_private_addresses_through() -> None:
    for url in ("http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "http://[::1]/"):
        assert await check_webhook_url(url, allow_private=True) == url


async def test_the_allowance_does_not_waive_the_other_checks() -> None:
    for url in ("ftp://127.0.0.1/", "http://u:p@127.0.0.1/"):
        with pytest.raises(InvalidParams):
            await check_webhook_url(url, allow_private=True)


# --- signatures -----------------------------------------------------------------------------


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(b"{}", "k", 1700000000) == expected


def test_verify_accepts_what_sign_made_and_nothing_else() -> None:
    body, now = b'{"id": "j1", "status": "done"}', 1_700_000_000
    headers = signed_headers(body, SECRET, now)
    stamp, signature = headers["X-Formy-Timestamp"], headers["X-Formy-Signature"]
    assert signature.startswith("sha256=")
    assert verify(body, SECRET, stamp, signature, now=now)
    assert verify(body, SECRET, int(stamp), signature.removeprefix("sha256="), now=now + 299)
    assert not verify(body + b" ", SECRET, stamp, signature, now=now)  # body changed
    assert not verify(body.replace(b"done", b"fail"), SECRET, stamp, signature, now=now)
    assert not verify(body, "other-secret", stamp, signature, now=now)
    assert not verify(body, SECRET, str(now + 1), signature, now=now)  # timestamp changed
    assert not verify(body, SECRET, stamp, signature, now=now + 301)  # too old: a replay
    assert not verify(body, SECRET, stamp, signature, now=now - 301)  # from the future
    assert not verify(body, SECRET, "yesterday", signature, now=now)
    assert not verify(body, SECRET, stamp, "sha256=" + "0" * 64, now=now)
    assert not verify(body, SECRET, stamp, "", now=now)


# --- delivery -------------------------------------------------------------------------------


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
    return {"formy": SimpleNamespace(settings=Settings(**values), store=store), "job_try": job_try}


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
    async with aiohttp.ClientSession() as shared:  # the worker's session, as ctx["http"]
        ctx = {**worker_ctx(store, webhook_max_attempts=6), "http": shared}
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
        assert not await enqueue_webhook(pool, running)
        assert not await enqueue_webhook(pool, await finished_job(store, None))
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
        ctx["formy"] = SimpleNamespace(settings=settings, store=store)

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
        assert await enqueue_webhook(pool, job)
        assert not await enqueue_webhook(pool, job)  # once per job
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
