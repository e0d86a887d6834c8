"""The v2 job routes over plain HTTP: statuses, snapshots, the event stream and its resume."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from formy_async.auth import mint_token
from formy_async.embedded import Stack
from tests.conftest import ADMIN_TOKEN, ROOT, TEST_SECRET, TOKEN
from tests.helpers import api_session, get_json, submit, wait_until

GRAPHS_TOKEN = mint_token(TEST_SECRET, "alice", graphs=True, ttl=3600)


def _graph(steps: int = 4) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((ROOT / "workflows" / "text_to_image.json").read_text())
    graph["5"]["inputs"].update(width=64, height=64)
    graph["3"]["inputs"]["steps"] = steps
    return graph


async def _submit(http: aiohttp.ClientSession, base: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{base}/api/v2/jobs", json={"workflow": _graph(), **body}) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 201, answer
        assert resp.headers["Location"] == answer["urls"]["self"]
        return answer


async def _until(http: aiohttp.ClientSession, url: str, status: str) -> dict[str, Any]:
    """The v2 job at `url` once it has `status`."""

    async def reached() -> bool:
        return bool((await get_json(http, url))[1]["status"] == status)

    await wait_until(reached, timeout=30)
    return dict((await get_json(http, url))[1])


async def _stream(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> list[tuple[str | None, str, dict[str, Any]]]:
    """Every frame of a v2 event stream, as (id, event, data), until it ends."""
    frames, frame_id, name = [], None, ""
    async with http.get(url, headers=headers or {}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                frame_id = line[4:]
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                frames.append((frame_id, name, json.loads(line[6:])))
            elif not line:
                frame_id = None
    return frames


async def test_a_finished_v2_job_shows_succeeded_outputs_as_assets_and_its_metrics(
    stack: Stack,
) -> None:
    async with api_session(GRAPHS_TOKEN) as http:
        job = await _submit(http, stack.url)
        assert (job["status"], job["queue_position"], job["outputs"]) == ("queued", None, [])
        done = await _until(http, f"{stack.url}/api/v2/jobs/{job['id']}", "succeeded")
    [output] = done["outputs"]
    assert (output["node_id"], output["type"], output["job_id"]) == ("9", "image", job["id"])
    assert output["url"].startswith(stack.url + f"/api/v2/assets/{output['id']}/content?")
    assert done["metrics"]["execution_ms"] >= 0 and done["metrics"]["queue_ms"] >= 0
    assert done["progress"]["value"] == 1.0
    assert done["completed_at"].endswith("Z") and done["error"] is None


async def test_the_event_stream_names_v2_events_and_ends_with_the_final_status(
    stack: Stack,
) -> None:
    async with api_session(GRAPHS_TOKEN) as http:
        job = await _submit(http, stack.url)
        frames = await _stream(http, stack.url + job["urls"]["events"])
    names = [name for _, name, _ in frames]
    assert names[0] == "status" and frames[0][2] == {"status": "queued"}
    assert {"progress", "output"} <= set(names)
    assert frames[-1][1:] == ("status", {"status": "succeeded"})
    statuses = [data["status"] for _, name, data in frames if name == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    progress = [data for _, name, data in frames if name == "progress"]
    assert all(set(p) >= {"value", "nodes_done", "nodes_total"} for p in progress)
    assert [int(i) for i, _, _ in frames if i] == sorted(int(i) for i, _, _ in frames if i)


async def test_a_stream_resumed_with_last_event_id_sends_only_what_came_after(
    stack: Stack,
) -> None:
    async with api_session(GRAPHS_TOKEN) as http:
        job = await _submit(http, stack.url)
        url = stack.url + job["urls"]["events"]
        whole = await _stream(http, url)
        first_output = next(int(i or 0) for i, name, _ in whole if name == "output")
        rest = await _stream(http, url, {"Last-Event-ID": str(first_output)})
    assert all(int(i) > first_output for i, _, _ in rest if i)
    assert rest[-1][1:] == ("status", {"status": "succeeded"})


async def test_a_finished_job_with_nothing_after_the_asked_event_answers_its_final_status(
    stack: Stack,
) -> None:
    async with api_session(GRAPHS_TOKEN) as http:
        job = await _submit(http, stack.url)
        url = stack.url + job["urls"]["events"]
        whole = await _stream(http, url)
        last = max(int(i) for i, _, _ in whole if i)
        again = await _stream(http, url, {"Last-Event-ID": str(last)})
    assert [(name, data) for _, name, data in again] == [("status", {"status": "succeeded"})]


async def test_a_running_job_is_canceling_until_its_worker_stops_it(slow_stack: Stack) -> None:
    graph = _graph(steps=200)
    async with api_session(GRAPHS_TOKEN) as http:
        async with http.post(f"{slow_stack.url}/api/v2/jobs", json={"workflow": graph}) as resp:
            job = await resp.json()
        url = f"{slow_stack.url}/api/v2/jobs/{job['id']}"
        await _until(http, url, "running")
        async with http.post(url + "/cancel") as resp:
            asked = await resp.json()
        assert (resp.status, asked["status"]) == (200, "canceling")
        await _until(http, url, "canceled")
        async with http.post(url + "/cancel") as resp:  # idempotent, and it stays canceled
            assert (resp.status, (await resp.json())["status"]) == (200, "canceled")


async def test_a_job_of_our_own_api_is_a_v2_job_too(stack: Stack) -> None:
    async with api_session(TOKEN) as http:
        job_id = (await submit(http, stack.url, "text_to_image", prompt="a fox", steps=2))["id"]
        status, shown = await get_json(http, f"{stack.url}/api/v2/jobs/{job_id}")
        assert status == 200 and shown["id"] == job_id
        status, workflow = await get_json(http, f"{stack.url}/api/v2/jobs/{job_id}/workflow")
    assert status == 200 and workflow["format"] == "api"
    assert workflow["workflow"]["6"]["inputs"]["text"] == "a fox"


async def test_the_list_filters_by_v2_status_and_pages_with_its_cursor(stack: Stack) -> None:
    async with api_session(GRAPHS_TOKEN) as http:
        made = [(await _submit(http, stack.url))["id"] for _ in range(3)]

        async def all_done() -> bool:
            _, page = await get_json(http, f"{stack.url}/api/v2/jobs?status=succeeded")
            return len(page["jobs"]) == 3

        await wait_until(all_done, timeout=30)
        _, first = await get_json(http, f"{stack.url}/api/v2/jobs?limit=2")
        _, second = await get_json(
            http, f"{stack.url}/api/v2/jobs?limit=2&cursor={first['next_cursor']}"
        )
        _, none = await get_json(http, f"{stack.url}/api/v2/jobs?status=queued,running")
        status, refused = await get_json(http, f"{stack.url}/api/v2/jobs?status=done")
    assert [j["id"] for j in first["jobs"] + second["jobs"]] == made[::-1]
    assert second["next_cursor"] is None and none["jobs"] == []
    assert (status, refused["error"]["code"]) == (400, "invalid_request")
    assert {"create_time", "update_time", "metadata"} <= set(first["jobs"][0])


async def test_another_users_v2_job_is_not_found(stack: Stack) -> None:
    async with api_session(GRAPHS_TOKEN) as http:
        job = await _submit(http, stack.url)
    other = mint_token(TEST_SECRET, "mallory", graphs=True)
    async with api_session(other) as http:
        for path in ("", "/workflow", "/events"):
            status, body = await get_json(http, f"{stack.url}/api/v2/jobs/{job['id']}{path}")
            assert (status, body["error"]["code"]) == (404, "not_found")
    async with api_session(ADMIN_TOKEN) as http:
        assert (await get_json(http, f"{stack.url}/api/v2/jobs/{job['id']}"))[0] == 200


async def test_bad_v2_submissions_get_a_v2_error_that_says_what_is_wrong(stack: Stack) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"workflow": {"nodes": [], "links": []}}, 422, "workflow_format_ui"),
        ({"workflow": "text_to_image"}, 400, "invalid_request"),
        ({"workflow": {"1": {"class_type": "SaveImage"}}}, 422, "invalid_workflow"),
        ({"workflow": _graph(), "metadata": {"bad key!": "x"}}, 422, "metadata_invalid"),
        (
            {"workflow": _graph(), "metadata": {str(i): "x" for i in range(17)}},
            422,
            "metadata_invalid",
        ),
    ]
    async with api_session(GRAPHS_TOKEN) as http:
        for body, status, code in cases:
            async with http.post(f"{stack.url}/api/v2/jobs", json=body) as resp:
                answer = await resp.json()
            assert (resp.status, answer["error"]["code"]) == (status, code), body
            assert answer["error"]["message"] and "reason" in answer["error"]["details"]
        async with http.post(f"{stack.url}/api/v2/jobs", data=b"{not json") as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (400, "invalid_request")
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{stack.url}/api/v2/jobs") as resp,
    ):
        assert (resp.status, (await resp.json())["error"]["code"]) == (401, "unauthorized")


async def test_extra_data_reaches_comfyui_with_the_prompt_and_is_never_shown(
    stack: Stack,
) -> None:
    extra = {"api_key_comfy_org": "partner-key", "note": "from v2"}
    async with api_session(GRAPHS_TOKEN) as http:
        job = await _submit(http, stack.url, extra_data=extra)
        shown = await _until(http, f"{stack.url}/api/v2/jobs/{job['id']}", "succeeded")
        _, ours = await get_json(http, f"{stack.url}/api/jobs/{job['id']}")
    assert "partner-key" not in json.dumps(shown) + json.dumps(ours)
    comfyui = str(stack.settings.comfyui_url).rstrip("/")
    async with aiohttp.ClientSession() as plain:
        _, history = await get_json(plain, f"{comfyui}/history/{ours['prompt_id']}")
    assert history[ours["prompt_id"]]["prompt"][3]["note"] == "from v2"
