"""The HTTP API's answers, especially to bad input: always a 4xx JSON error naming the problem."""

from __future__ import annotations

from typing import Any

import pytest

from formy_async.embedded import Stack
from formy_async.store.jobs import JobStore

from ..conftest import ADMIN_TOKEN
from ..helpers import api_session, follow, get_json, submit


async def _post(stack: Stack, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with api_session() as session, session.post(stack.url + path, **kwargs) as r:
        return r.status, await r.json()


async def test_submission_answers_202_with_the_job_and_its_links(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
    assert job["status"] == "pending"
    assert job["links"]["self"] == f"/api/jobs/{job['id']}"
    assert job["params"]["prompt"] == "a fox"


PUBLIC_FIELDS = {
    "id",
    "user",
    "workflow",
    "params",
    "webhook_url",
    "status",
    "progress",
    "created_at",
    "started_at",
    "finished_at",
    "prompt_id",
    "metadata",
    "time_limit",
    "priority",
    "outputs",
    "texts",
    "error",
    "reused_from",
    "queue_position",
    "eta_seconds",
    "metrics",
    "links",
}


async def test_an_owner_sees_the_public_fields_of_a_job_only(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        await follow(session, fake_stack.url, job["id"])
        _, seen = await get_json(session, f"{fake_stack.url}/api/jobs/{job['id']}")
    assert set(seen) == set(job) == PUBLIC_FIELDS  # no backend, attempt or losses


async def test_an_admin_also_sees_where_a_job_ran(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        await follow(session, fake_stack.url, job["id"])
    async with api_session(ADMIN_TOKEN) as admin:
        _, seen = await get_json(admin, f"{fake_stack.url}/api/jobs/{job['id']}")
    assert set(seen) == PUBLIC_FIELDS | {"backend", "attempt", "losses"}
    assert seen["backend"] == fake_stack.settings.backends[0].label
    assert seen["attempt"] == 1


async def test_embedded_stack_runs_a_job_to_done(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        events = await follow(session, fake_stack.url, job["id"])
    assert events[-1]["type"] == "done"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"workflow": "nope", "params": {}}, 404, "workflow_not_found"),
        ({"workflow": "text_to_image", "params": {}}, 422, "invalid_params"),
        ({"workflow": "text_to_image", "params": {"prompt": 5}}, 422, "invalid_params"),
        (
            {"workflow": "text_to_image", "params": {"prompt": "a", "steps": "x"}},
            422,
            "invalid_params",
        ),
        ({"params": {}}, 400, "invalid_body"),
        ({"workflow": "text_to_image", "params": [1]}, 400, "invalid_body"),
        ([1, 2], 400, "invalid_body"),
        ({"workflow": "text_to_image", "params": {}, "extra": 1}, 400, "invalid_body"),
    ],
)
async def test_bad_submission_gets_a_json_error(
    fake_stack: Stack, body: Any, status: int, code: str
) -> None:
    got_status, got = await _post(fake_stack, "/api/jobs", json=body)
    assert (got_status, got["error"]["code"]) == (status, code)
    assert got["error"]["message"]


async def test_malformed_json_gets_400(fake_stack: Stack) -> None:
    status, body = await _post(
        fake_stack, "/api/jobs", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]["code"]) == (400, "malformed_json")


async def test_invalid_params_name_each_param(fake_stack: Stack) -> None:
    _, body = await _post(
        fake_stack,
        "/api/jobs",
        json={"workflow": "text_to_image", "params": {"prompt": "a", "steps": 0, "width": 3}},
    )
    assert {d["param"] for d in body["error"]["details"]} == {"steps", "width"}


async def test_unknown_job_is_404(fake_stack: Stack) -> None:
    async with api_session() as session:
        status, body = await get_json(session, f"{fake_stack.url}/api/jobs/nope")
    assert (status, body["error"]["code"]) == (404, "job_not_found")


async def test_unknown_output_is_404(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a", steps=1, width=64, height=64)
        status, body = await get_json(
            session, f"{fake_stack.url}/api/jobs/{job['id']}/outputs/../../etc/passwd"
        )
    assert status == 404
    assert body["error"]["code"] in {"output_not_found", "not_found"}


async def test_unknown_route_is_a_json_404(fake_stack: Stack) -> None:
    async with api_session() as session:
        status, body = await get_json(session, f"{fake_stack.url}/api/nothing")
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_workflows_list_a_json_schema_each(fake_stack: Stack) -> None:
    async with api_session() as session:
        status, body = await get_json(session, f"{fake_stack.url}/api/workflows")
    assert status == 200
    (t2i,) = [w for w in body["workflows"] if w["name"] == "text_to_image"]
    assert t2i["params"]["required"] == ["prompt"]


async def test_a_workflow_says_which_models_it_loads_and_how_many_backends_have_each(
    fake_stack: Stack,
) -> None:
    async with api_session() as session:
        _, pose = await get_json(session, f"{fake_stack.url}/api/workflows/pose_change")
    assert pose["version"]
    assert pose["models"] == {
        "control_v11p_sd15_openpose.pth": 1,
        "v1-5-pruned-emaonly.safetensors": 1,
    }


async def test_admins_see_which_backends_have_a_workflows_models(fake_stack: Stack) -> None:
    async with api_session(ADMIN_TOKEN) as session:
        _, t2i = await get_json(session, f"{fake_stack.url}/api/workflows/text_to_image")
    assert t2i["models"] == {"sd_xl_base_1.0.safetensors": [fake_stack.settings.comfyui_base]}


async def test_job_list_is_newest_first_and_pages(fake_stack: Stack) -> None:
    async with api_session() as session:
        ids = [
            (await submit(session, fake_stack.url, prompt=f"p{i}", steps=1, width=64, height=64))[
                "id"
            ]
            for i in range(3)
        ]
        _, first = await get_json(session, f"{fake_stack.url}/api/jobs?limit=2")
        _, second = await get_json(
            session, f"{fake_stack.url}/api/jobs?limit=2&cursor={first['next_cursor']}"
        )
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    assert [j["id"] for j in second["jobs"]] == ids[:1]


async def test_bad_list_query_is_400(fake_stack: Stack) -> None:
    async with api_session() as session:
        status, body = await get_json(session, f"{fake_stack.url}/api/jobs?limit=0")
    assert (status, body["error"]["code"]) == (400, "invalid_query")


async def test_healthz_and_readyz_answer_ok(fake_stack: Stack) -> None:
    async with api_session() as session:
        assert (await get_json(session, f"{fake_stack.url}/healthz"))[0] == 200
        status, body = await get_json(session, f"{fake_stack.url}/readyz")
    assert (status, body["checks"]) == (200, {"redis": "ok", "comfyui": "ok"})


async def test_page_is_served_without_inner_html(fake_stack: Stack) -> None:
    async with api_session() as session, session.get(fake_stack.url + "/") as r:
        page = await r.text()
    assert r.status == 200 and "<title>formy-async</title>" in page
    assert "innerHTML" not in page


async def test_websocket_refuses_bad_messages_and_unknown_jobs(fake_stack: Stack) -> None:
    async with api_session() as session, session.ws_connect(fake_stack.url + "/ws") as ws:
        await ws.send_str("not json")
        assert (await ws.receive_json())["error"]["code"] == "bad_message"
        await ws.send_json({"type": "subscribe", "job_id": "nope"})
        assert (await ws.receive_json())["error"]["code"] == "job_not_found"
        await ws.send_json({"type": "subscribe", "job_id": "x", "after": -1})
        assert (await ws.receive_json())["error"]["code"] == "bad_message"


async def test_a_message_the_server_fails_on_gets_an_error_on_a_socket_that_stays_open(
    fake_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: JobStore, job_id: str) -> str | None:
        raise RuntimeError("the store broke")

    async with api_session() as session, session.ws_connect(fake_stack.url + "/ws") as ws:
        monkeypatch.setattr(JobStore, "owner", broken)
        await ws.send_json({"type": "subscribe", "job_id": "x"})
        failed = await ws.receive_json(timeout=10)
        monkeypatch.undo()
        await ws.send_json({"type": "subscribe", "job_id": "nope"})
        answered = await ws.receive_json(timeout=10)
    assert (failed["error"]["code"], answered["error"]["code"]) == (
        "internal_error",
        "job_not_found",
    )
