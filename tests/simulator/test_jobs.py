"""The jobs API of the new profile (/api/jobs): listing, one job in each state, cancelling."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from .support import (
    NEW,
    OLD,
    get_json,
    history_of,
    save_graph,
    simulator,
    slow_graph,
    submit,
    until_running,
)

QUEUE_FIELDS = {"id", "status", "priority", "create_time", "outputs_count"}
FINISHED_FIELDS = QUEUE_FIELDS | {
    "execution_start_time", "execution_end_time", "previewable_outputs_count", "preview_output",
}  # fmt: skip


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with simulator(NEW) as base:
        yield base


async def cancel(http: aiohttp.ClientSession, url: str, prompt_id: str) -> bool:
    async with http.post(f"{url}/api/jobs/{prompt_id}/cancel") as response:
        assert response.status == 200
        cancelled: bool = (await response.json())["cancelled"]
        return cancelled


async def job(http: aiohttp.ClientSession, url: str, prompt_id: str) -> tuple[int, Any]:
    return await get_json(http, f"{url}/api/jobs/{prompt_id}")


async def test_old_profile_has_no_jobs_api(http: aiohttp.ClientSession) -> None:
    async with simulator(OLD) as url:
        async with http.get(f"{url}/api/jobs") as response:
            assert response.status == 404
        async with http.post(f"{url}/api/jobs/{uuid.uuid4()}/cancel") as response:
            assert response.status == 404


async def test_jobs_routes_live_under_api_only(url: str, http: aiohttp.ClientSession) -> None:
    assert (await get_json(http, f"{url}/api/jobs"))[0] == 200
    assert (await get_json(http, f"{url}/api/api/jobs"))[0] == 200  # ComfyUI's doubled prefix
    async with http.get(f"{url}/jobs") as response:
        assert response.status == 404


async def test_unknown_job_is_404(url: str, http: aiohttp.ClientSession) -> None:
    assert await job(http, url, str(uuid.uuid4())) == (404, {"error": "Job not found"})


async def test_finished_job_has_outputs_status_and_workflow(
    url: str, http: aiohttp.ClientSession
) -> None:
    prompt_id = await submit(http, url, save_graph(prefix="done"))
    entry = await history_of(http, url, prompt_id)
    status, body = await job(http, url, prompt_id)
    assert status == 200
    assert set(body) >= FINISHED_FIELDS
    assert (body["status"], body["outputs_count"], body["priority"]) == ("completed", 1, 0)
    assert body["create_time"] == entry["prompt"][3]["create_time"]
    assert body["outputs"] == entry["outputs"]
    assert body["execution_status"] == entry["status"]
    assert body["workflow"] == {"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]}
    preview = body["preview_output"]
    assert preview == {**entry["outputs"]["2"]["images"][0], "nodeId": "2", "mediaType": "images"}


async def test_running_and_pending_jobs_answer_before_history(
    url: str, http: aiohttp.ClientSession
) -> None:
    running = await submit(http, url, slow_graph())
    pending = await submit(http, url, save_graph())
    await until_running(http, url, running)
    (_, first), (_, second) = await job(http, url, running), await job(http, url, pending)
    assert (first["status"], second["status"]) == ("in_progress", "pending")
    assert set(first) >= QUEUE_FIELDS and set(second) >= QUEUE_FIELDS
    assert (await get_json(http, f"{url}/history/{running}"))[1] == {}
    await cancel(http, url, running)


@pytest.mark.parametrize(("version", "has_workflow"), [("0.33.0", False), ("0.38.1", True)])
async def test_queued_job_detail_carries_its_workflow_from_0_38(
    version: str, has_workflow: bool, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        running = await submit(http, url, slow_graph())
        pending = await submit(http, url, save_graph())
        await until_running(http, url, running)
        details = [(await job(http, url, prompt_id))[1] for prompt_id in (running, pending)]
        _, listing = await get_json(http, f"{url}/api/jobs")
        await cancel(http, url, running)
    for detail in details:
        assert set(detail) == QUEUE_FIELDS | {"previewable_outputs_count"} | (
            {"workflow"} if has_workflow else set()
        )
    if has_workflow:
        assert details[1]["workflow"]["prompt"]["2"]["class_type"] == "SaveImage"
    assert all("workflow" not in listed for listed in listing["jobs"])  # never in the list


async def test_cancel_interrupts_the_running_job(url: str, http: aiohttp.ClientSession) -> None:
    prompt_id = await submit(http, url, slow_graph())
    await until_running(http, url, prompt_id)
    assert await cancel(http, url, prompt_id) is True
    entry = await history_of(http, url, prompt_id)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    _, body = await job(http, url, prompt_id)
    assert body["status"] == "cancelled"


async def test_cancel_dequeues_a_pending_job(url: str, http: aiohttp.ClientSession) -> None:
    running = await submit(http, url, slow_graph())
    pending = await submit(http, url, save_graph())
    await until_running(http, url, running)
    assert await cancel(http, url, pending) is True
    _, queue = await get_json(http, f"{url}/queue")
    assert queue["queue_pending"] == []
    assert (await job(http, url, pending))[0] == 404  # removed prompts never reach history
    assert (await job(http, url, running))[1]["status"] == "in_progress"
    await cancel(http, url, running)


async def test_cancel_is_a_no_op_for_finished_and_unknown_jobs(
    url: str, http: aiohttp.ClientSession
) -> None:
    prompt_id = await submit(http, url, save_graph())
    await history_of(http, url, prompt_id)
    assert await cancel(http, url, prompt_id) is False
    assert await cancel(http, url, str(uuid.uuid4())) is False
    assert (await job(http, url, prompt_id))[1]["status"] == "completed"


async def test_cancelling_twice_reports_only_the_first(
    url: str, http: aiohttp.ClientSession
) -> None:
    running = await submit(http, url, slow_graph())
    pending = await submit(http, url, save_graph())
    await until_running(http, url, running)
    assert [await cancel(http, url, pending), await cancel(http, url, pending)] == [True, False]
    await cancel(http, url, running)


async def test_failed_job_carries_its_execution_error(
    url: str, http: aiohttp.ClientSession
) -> None:
    graph = save_graph()
    graph["3"] = {"class_type": "FailOnPurpose", "inputs": {"image": ["1", 0], "message": "no"}}
    graph["2"]["inputs"]["images"] = ["3", 0]
    prompt_id = await submit(http, url, graph)
    await history_of(http, url, prompt_id)
    _, body = await job(http, url, prompt_id)
    assert body["status"] == "failed"
    assert body["execution_error"]["node_type"] == "FailOnPurpose"
    assert body["outputs_count"] == 0


async def test_batch_cancel_refuses_malformed_ids(url: str, http: aiohttp.ClientSession) -> None:
    good, bad = str(uuid.uuid4()), uuid.uuid4().hex
    body = {"job_ids": [good, bad, 7]}
    async with http.post(f"{url}/api/jobs/cancel", json=body) as response:
        assert response.status == 400
        answer = await response.json()
    assert answer == {"error": "job_ids contains invalid id(s)", "invalid_ids": [bad, "7"]}


@pytest.mark.parametrize(
    ("body", "error"),
    [(b"{nope", "Request body must be valid JSON"),
     (b'{"job_ids": "x"}', "job_ids must be a list")],
)  # fmt: skip
async def test_batch_cancel_refuses_a_bad_body(
    body: bytes, error: str, url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{url}/api/jobs/cancel", data=body) as response:
        assert (response.status, await response.json()) == (400, {"error": error})


async def test_batch_cancel_cancels_running_and_pending(
    url: str, http: aiohttp.ClientSession
) -> None:
    running = await submit(http, url, slow_graph())
    pending = await submit(http, url, save_graph())
    await until_running(http, url, running)
    async with http.post(f"{url}/api/jobs/cancel", json={"job_ids": [pending, running]}) as resp:
        assert await resp.json() == {"cancelled": True}
    entry = await history_of(http, url, running)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await job(http, url, pending))[0] == 404


async def test_list_has_jobs_and_pagination(url: str, http: aiohttp.ClientSession) -> None:
    ids = [await submit(http, url, save_graph(colour=c)) for c in (1, 2, 3)]
    await history_of(http, url, ids[-1])
    _, body = await get_json(http, f"{url}/api/jobs?limit=2")
    assert body["pagination"] == {"offset": 0, "limit": 2, "total": 3, "has_more": True}
    assert [j["id"] for j in body["jobs"]] == [ids[2], ids[1]]  # newest first by default
    assert "outputs" not in body["jobs"][0] and "workflow" not in body["jobs"][0]
    _, rest = await get_json(http, f"{url}/api/jobs?limit=2&offset=2&sort_order=asc")
    assert [j["id"] for j in rest["jobs"]] == [ids[2]]
    assert rest["pagination"]["has_more"] is False


async def test_list_filters_by_status(url: str, http: aiohttp.ClientSession) -> None:
    done = await submit(http, url, save_graph())
    await history_of(http, url, done)
    running = await submit(http, url, slow_graph())
    pending = await submit(http, url, save_graph(colour=9))
    await until_running(http, url, running)
    _, active = await get_json(http, f"{url}/api/jobs?status=pending,in_progress")
    _, finished = await get_json(http, f"{url}/api/jobs?status=completed")
    assert {j["id"]: j["status"] for j in active["jobs"]} == {
        running: "in_progress",
        pending: "pending",
    }
    assert [j["id"] for j in finished["jobs"]] == [done]
    await cancel(http, url, running)


@pytest.mark.parametrize(
    ("query", "error"),
    [("status=done", "Invalid status value(s): done. Valid values: pending, in_progress, "
                     "completed, failed, cancelled"),
     ("sort_by=name", "sort_by must be 'created_at' or 'execution_duration'"),
     ("sort_order=up", "sort_order must be 'asc' or 'desc'"),
     ("limit=0", "limit must be a positive integer"),
     ("limit=x", "limit must be an integer"),
     ("offset=x", "offset must be an integer")],
)  # fmt: skip
async def test_list_refuses_bad_parameters(
    query: str, error: str, url: str, http: aiohttp.ClientSession
) -> None:
    assert await get_json(http, f"{url}/api/jobs?{query}") == (400, {"error": error})
