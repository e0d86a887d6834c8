"""Hostile requests, table-driven: each gets its exact status and code, and the service still
serves a normal job afterwards."""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from PIL import Image

from formy_async.auth import mint_token
from formy_async.embedded import Stack

from ..conftest import ADMIN_TOKEN, TEST_SECRET, TOKEN, StackFactory
from ..helpers import api_session, follow, submit

pytestmark = pytest.mark.redis

BOB = mint_token(TEST_SECRET, "bob", ttl=3600)
EXPIRED = mint_token(TEST_SECRET, "alice", ttl=-10)
FORGED = mint_token("another-secret-that-is-long-enough-xxxxxxx", "alice", ttl=3600)
NONE_ALG = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, None, algorithm="none")
HS512 = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS512")
NO_EXPIRY = jwt.encode({"sub": "alice"}, TEST_SECRET, algorithm="HS256")
BAD_SUBJECT = jwt.encode(
    {"sub": "../etc", "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS256"
)
TAMPERED = TOKEN[:-4] + ("AAAA" if not TOKEN.endswith("AAAA") else "BBBB")


@pytest.fixture
async def world(make_stack: StackFactory) -> AsyncIterator[dict[str, Any]]:
    """A stack where alice has a finished job and an upload, for others to try to reach."""
    async with (
        make_stack(webhook_secret="hooks-" + "x" * 30) as stack,
        api_session() as alice,
    ):
        job = await submit(alice, stack.url, prompt="alice's fox", steps=2, width=64, height=64)
        done = (await follow(alice, stack.url, job["id"]))[-1]
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, format="PNG")
        form = aiohttp.FormData()
        form.add_field("file", out.getvalue(), filename="a.png")
        async with alice.post(f"{stack.url}/api/uploads", data=form) as r:
            upload = await r.json()
        yield {"stack": stack, "job": job["id"], "output": done["outputs"][0], "upload": upload}


async def call(
    stack: Stack, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(kwargs.pop("headers", {}))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.url + path, headers=headers, **kwargs) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body


BAD_TOKENS = [
    ("missing", None, "token_missing"),
    ("expired", EXPIRED, "token_expired"),
    ("forged", FORGED, "token_invalid"),
    ("tampered", TAMPERED, "token_invalid"),
    ("alg none", NONE_ALG, "token_invalid"),
    ("other algorithm", HS512, "token_invalid"),
    ("no expiry", NO_EXPIRY, "token_invalid"),
    ("bad subject", BAD_SUBJECT, "token_invalid"),
    ("not a jwt", "hello", "token_invalid"),
]


@pytest.mark.parametrize(("name", "token", "code"), BAD_TOKENS, ids=[t[0] for t in BAD_TOKENS])
async def test_bad_token_is_401(
    world: dict[str, Any], name: str, token: str | None, code: str
) -> None:
    status, body = await call(world["stack"], "GET", "/api/jobs", token)
    assert (status, body["error"]["code"]) == (401, code)


async def test_basic_auth_scheme_is_401(world: dict[str, Any]) -> None:
    status, body = await call(
        world["stack"], "GET", "/api/jobs", headers={"Authorization": "Basic YWxpY2U6cHc="}
    )
    assert (status, body["error"]["code"]) == (401, "token_invalid")


def _others(w: dict[str, Any]) -> list[tuple[str, str]]:
    job, upload = w["job"], w["upload"]["id"]
    filename = w["output"]["filename"]
    return [
        ("GET", f"/api/jobs/{job}"),
        ("GET", f"/api/jobs/{job}/events"),
        ("GET", f"/api/jobs/{job}/outputs/{filename}"),
        ("GET", f"/api/jobs/{job}/preview"),
        ("POST", f"/api/jobs/{job}/cancel"),
        ("GET", f"/api/uploads/{upload}"),
    ]


@pytest.mark.parametrize("index", range(6))
async def test_another_users_ids_answer_404(world: dict[str, Any], index: int) -> None:
    method, path = _others(world)[index]
    status, body = await call(world["stack"], method, path, BOB)
    assert status == 404
    assert body["error"]["code"] in {"job_not_found", "upload_not_found"}


async def test_another_users_upload_cannot_be_used_in_a_job(world: dict[str, Any]) -> None:
    status, body = await call(
        world["stack"],
        "POST",
        "/api/jobs",
        BOB,
        json={"workflow": "upscale", "params": {"image": world["upload"]["id"]}},
    )
    assert (status, body["error"]["code"]) == (422, "upload_not_found")


async def test_another_users_jobs_are_not_listed(world: dict[str, Any]) -> None:
    status, body = await call(world["stack"], "GET", "/api/jobs", BOB)
    assert (status, body["jobs"]) == (200, [])


async def test_signed_output_url_works_without_a_header(world: dict[str, Any]) -> None:
    status, body = await call(world["stack"], "GET", world["output"]["url"])
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("change", ["sig", "exp", "path"])
async def test_altered_signed_url_is_401(world: dict[str, Any], change: str) -> None:
    url = world["output"]["url"]
    path, _, query = url.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    if change == "sig":
        params["sig"] = "0" * len(params["sig"])
    elif change == "exp":
        params["exp"] = str(int(params["exp"]) + 3600)
    else:
        path = path.replace(world["output"]["filename"], "other.png")
    status, body = await call(
        world["stack"], "GET", f"{path}?exp={params['exp']}&sig={params['sig']}"
    )
    assert (status, body["error"]["code"]) == (401, "signature_invalid")


async def test_stats_need_the_admin_scope(world: dict[str, Any]) -> None:
    status, body = await call(world["stack"], "GET", "/api/stats", TOKEN)
    assert (status, body["error"]["code"]) == (403, "admin_required")
    assert (await call(world["stack"], "GET", "/api/stats", ADMIN_TOKEN))[0] == 200


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def _hook(url: str) -> dict[str, Any]:
    return {"workflow": "text_to_image", "params": {"prompt": "a"}, "webhook_url": url}


HOSTILE_BODIES = [
    (
        "deep nesting",
        {"workflow": "text_to_image", "params": {"x": _deep(50)}},
        400,
        "json_too_deep",
    ),
    (
        "prompt too long",
        {"workflow": "text_to_image", "params": {"prompt": "a" * 5000}},
        422,
        "invalid_params",
    ),
    (
        "raw graph without the graphs scope",
        {"graph": {"1": {"class_type": "SaveImage", "inputs": {}}}},
        403,
        "graphs_not_allowed",
    ),
    ("workflow and graph", {"workflow": "upscale", "graph": {}}, 400, "invalid_body"),
    ("webhook to loopback", _hook("http://127.0.0.1:9/hook"), 422, "webhook_url_refused"),
    ("webhook to a private network", _hook("http://10.0.0.1/hook"), 422, "webhook_url_refused"),
    (
        "webhook to cloud metadata",
        _hook("http://169.254.169.254/latest/meta-data"),
        422,
        "webhook_url_refused",
    ),
    (
        "webhook to a name resolving to loopback",
        _hook("http://localhost:8080/hook"),
        422,
        "webhook_url_refused",
    ),
    (
        "webhook with credentials",
        _hook("http://user:pw@93.184.216.34/hook"),
        422,
        "webhook_url_invalid",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "code"), HOSTILE_BODIES, ids=[b[0] for b in HOSTILE_BODIES]
)
async def test_hostile_body_is_refused(
    world: dict[str, Any], name: str, body: Any, status: int, code: str
) -> None:
    got_status, got = await call(world["stack"], "POST", "/api/jobs", TOKEN, json=body)
    assert (got_status, got["error"]["code"]) == (status, code)


async def test_oversized_body_is_413(world: dict[str, Any]) -> None:
    data = json.dumps({"workflow": "text_to_image", "params": {"prompt": "a" * 2_000_000}})
    status, body = await call(
        world["stack"],
        "POST",
        "/api/jobs",
        TOKEN,
        data=io.BytesIO(data.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


RAW_GRAPHS = [
    (
        "disallowed node",
        {
            "1": {"class_type": "ExecutePython", "inputs": {"code": "x"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        },
        "node_not_allowed",
    ),
    (
        "path traversal",
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        },
        "path_not_allowed",
    ),
    (
        "absolute path",
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "/etc/passwd"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        },
        "path_not_allowed",
    ),
    (
        "escaping prefix",
        {
            "1": {"class_type": "EmptyImage", "inputs": {}},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "../../x"},
            },
        },
        "path_not_allowed",
    ),
]


@pytest.mark.parametrize(("name", "graph", "code"), RAW_GRAPHS, ids=[g[0] for g in RAW_GRAPHS])
async def test_hostile_raw_graph_is_refused(
    world: dict[str, Any], name: str, graph: dict[str, Any], code: str
) -> None:
    status, body = await call(
        world["stack"], "POST", "/api/jobs", ADMIN_TOKEN, json={"graph": graph}
    )
    assert (status, body["error"]["code"]) == (422, code)


async def test_admin_raw_graph_runs(world: dict[str, Any]) -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": 255},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    stack = world["stack"]
    async with api_session(ADMIN_TOKEN) as admin:
        async with admin.post(f"{stack.url}/api/jobs", json={"graph": graph}) as r:
            job = await r.json()
        events = await follow(admin, stack.url, job["id"])
    assert events[-1]["type"] == "done"
    assert (events[-1]["outputs"][0]["width"], events[-1]["outputs"][0]["height"]) == (32, 16)


async def test_path_traversal_in_output_filename_is_404(world: dict[str, Any]) -> None:
    for name in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E", "9_1.png%00.txt"):
        status, _ = await call(
            world["stack"], "GET", f"/api/jobs/{world['job']}/outputs/{name}", TOKEN
        )
        assert status == 404


async def test_websocket_refuses_a_foreign_origin_before_the_upgrade(world: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(
                f"{world['stack'].url}/ws?token={TOKEN}", headers={"Origin": "http://evil.example"}
            )
    assert info.value.status == 403


@pytest.mark.parametrize("token", [EXPIRED, FORGED, NONE_ALG], ids=["expired", "forged", "none"])
async def test_websocket_with_a_bad_token_closes_4401(world: dict[str, Any], token: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{world['stack'].url}/ws?token={token}") as ws,
    ):
        first = await ws.receive_json()
        closing = await ws.receive()
    assert first["type"] == "error"
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4401


async def test_websocket_takes_the_token_as_its_first_message(world: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{world['stack'].url}/ws") as ws,
    ):
        await ws.send_json({"type": "auth", "token": TOKEN})
        await ws.send_json({"type": "subscribe", "job_id": world["job"], "after": 0})
        assert (await ws.receive_json())["type"] == "subscribed"


async def test_websocket_refuses_another_users_job(world: dict[str, Any]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{world['stack'].url}/ws?token={BOB}") as ws,
    ):
        await ws.send_json({"type": "subscribe", "job_id": world["job"], "after": 0})
        message = await ws.receive_json()
    assert (message["type"], message["error"]["code"]) == ("error", "job_not_found")


async def test_websocket_closes_when_the_token_expires(world: dict[str, Any]) -> None:
    short = mint_token(TEST_SECRET, "alice", ttl=1)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{world['stack'].url}/ws?token={short}") as ws,
    ):
        closing = await ws.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4401


async def test_concurrency_limit_is_429_with_retry_after(make_stack: StackFactory) -> None:
    async with make_stack(max_concurrent_tasks_per_user=2) as stack, api_session() as alice:
        body = {"workflow": "text_to_image", "params": {"prompt": "a", "steps": 150}}
        statuses, retry_after = [], None
        for _ in range(3):
            async with alice.post(f"{stack.url}/api/jobs", json=body) as r:
                statuses.append(r.status)
                if r.status == 429:
                    retry_after = r.headers.get("Retry-After")
                    assert (await r.json())["error"]["code"] == "too_many_jobs"
        async with api_session(BOB) as bob:  # another user is not held back
            job = await submit(bob, stack.url, prompt="b", steps=1, width=64, height=64)
    assert statuses == [202, 202, 429] and retry_after is not None
    assert job["status"] == "pending"


async def test_submission_flood_is_rate_limited_then_served_again(
    make_stack: StackFactory,
) -> None:
    async with make_stack(submissions_per_minute=5) as stack, api_session() as alice:
        body = {
            "workflow": "text_to_image",
            "params": {"prompt": "a", "steps": 1, "width": 64, "height": 64},
        }
        statuses = []
        for _ in range(8):
            async with alice.post(f"{stack.url}/api/jobs", json=body) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
        async with api_session(BOB) as bob:
            job = await submit(bob, stack.url, prompt="still served", steps=1, width=64, height=64)
            events = await follow(bob, stack.url, job["id"])
    assert statuses.count(429) == 3 and statuses[:5] == [202] * 5
    assert events[-1]["type"] == "done"


async def test_service_still_serves_a_normal_job_after_all_that(world: dict[str, Any]) -> None:
    stack = world["stack"]
    for token in (None, EXPIRED, NONE_ALG):
        await call(stack, "GET", "/api/jobs", token)
    await call(
        stack,
        "POST",
        "/api/jobs",
        TOKEN,
        data=b"{" * 100000,
        headers={"Content-Type": "application/json"},
    )
    async with api_session() as alice:
        job = await submit(alice, stack.url, prompt="after", steps=1, width=64, height=64)
        assert (await follow(alice, stack.url, job["id"]))[-1]["type"] == "done"


async def test_cors_answers_configured_origins_only(make_stack: StackFactory) -> None:
    app = "https://app.example"
    async with make_stack(cors_origins=[app]) as stack:
        allowed = await _preflight(stack, app)
        refused = await _preflight(stack, "https://evil.example")
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{stack.url}/api/workflows",
                headers={"Origin": app, "Authorization": f"Bearer {TOKEN}"},
            ) as r,
        ):
            simple = r.headers.get("Access-Control-Allow-Origin")
    assert allowed[0] == 204 and allowed[1].get("Access-Control-Allow-Origin") == app
    assert "Authorization" in allowed[1].get("Access-Control-Allow-Headers", "")
    assert refused[0] == 403 and "Access-Control-Allow-Origin" not in refused[1]
    assert simple == app


async def _preflight(stack: Stack, origin: str) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            f"{stack.url}/api/jobs",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        ) as r,
    ):
        return r.status, dict(r.headers)
