"""Result reuse: an identical request finishes at once with a finished job's outputs, or follows
the one that still runs; any difference runs it again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from formy_async.embedded import Stack
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.web import followers
from formy_async.web.app import create_app

from ..conftest import ADMIN_TOKEN, ROOT, StackFactory, stack_settings
from ..helpers import api_session, follow, get_json, job_status, upload_image, wait_until

FOX = {"prompt": "a fox", "seed": 7, "steps": 2, "width": 64, "height": 64}
SLOW_FOX = {**FOX, "steps": 60}


async def submit(
    session: aiohttp.ClientSession,
    base: str,
    params: dict[str, Any],
    *,
    reuse: bool | None = True,
    workflow: str = "text_to_image",
) -> dict[str, Any]:
    body: dict[str, Any] = {"workflow": workflow, "params": params}
    if reuse is not None:
        body["reuse"] = reuse
    async with session.post(f"{base}/api/jobs", json=body) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status == 202, answer
        return answer


async def prompts(session: aiohttp.ClientSession, stack: Stack) -> int:
    """How many prompts ComfyUI (the simulator) was given."""
    _, history = await get_json(session, f"{stack.settings.comfyui_base}/history")
    return len(history)


async def output_bytes(session: aiohttp.ClientSession, base: str, job: dict[str, Any]) -> bytes:
    async with session.get(base + job["outputs"][0]["url"]) as r:
        assert r.status == 200
        return await r.read()


async def run(
    session: aiohttp.ClientSession, base: str, params: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    job = await submit(session, base, params, **kw)
    await follow(session, base, job["id"])
    return (await get_json(session, f"{base}/api/jobs/{job['id']}"))[1]


async def test_an_identical_request_finishes_at_once_with_the_same_outputs(stack: Stack) -> None:
    async with api_session() as session:
        first = await run(session, stack.url, FOX)
        again = await submit(session, stack.url, FOX)
        events = await follow(session, stack.url, again["id"])
        assert again["status"] == "done"
        assert again["reused_from"] == first["id"]
        assert [o["filename"] for o in again["outputs"]] == [
            o["filename"] for o in first["outputs"]
        ]
        assert await output_bytes(session, stack.url, again) == await output_bytes(
            session, stack.url, first
        )
        assert [e["type"] for e in events] == ["submitted", "done"]
        assert await prompts(session, stack) == 1


@pytest.mark.parametrize(
    "change", [{"seed": 8}, {"prompt": "a hare"}, {"model": "v1-5-pruned-emaonly.safetensors"}]
)
async def test_any_different_param_runs_again(stack: Stack, change: dict[str, Any]) -> None:
    async with api_session() as session:
        first = await run(session, stack.url, FOX)
        same = await submit(session, stack.url, FOX)
        other = await run(session, stack.url, {**FOX, **change})
        assert same["reused_from"] == first["id"]
        assert other["reused_from"] is None
        assert await prompts(session, stack) == 2


async def test_a_random_seed_never_matches(stack: Stack) -> None:
    unseeded = {k: v for k, v in FOX.items() if k != "seed"}
    async with api_session() as session:
        await run(session, stack.url, unseeded)
        other = await run(session, stack.url, unseeded)
        seeded = await submit(session, stack.url, {**unseeded, "seed": other["params"]["seed"]})
    assert other["reused_from"] is None
    assert seeded["reused_from"] == other["id"]  # its recorded seed matches


async def test_without_reuse_an_identical_request_runs_again(stack: Stack) -> None:
    async with api_session() as session:
        first = await run(session, stack.url, FOX)
        other = await run(session, stack.url, FOX, reuse=False)
        asked = await submit(session, stack.url, FOX)
        assert other["reused_from"] is None
        assert asked["reused_from"] == first["id"]
        assert await prompts(session, stack) == 2


async def test_a_manifest_with_reuse_reuses_unless_the_request_says_not(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    workflows = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows", workflows)
    manifest = workflows / "text_to_image.toml"
    manifest.write_text(manifest.read_text().replace("\n[params", "\nreuse = true\n\n[params", 1))
    async with make_stack(workflows_dir=workflows) as stack, api_session() as session:
        first = await run(session, stack.url, FOX, reuse=None)
        unasked = await submit(session, stack.url, FOX, reuse=None)
        declined = await run(session, stack.url, FOX, reuse=False)
        assert unasked["reused_from"] == first["id"]
        assert declined["reused_from"] is None
        assert await prompts(session, stack) == 2


async def test_inputs_are_compared_by_their_contents(stack: Stack) -> None:
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    async with api_session() as session:
        first_red = await upload_image(session, stack.url, red)
        again_red = await upload_image(session, stack.url, red)  # another id, the same bytes
        blue_id = await upload_image(session, stack.url, blue)
        first = await run(session, stack.url, {"image": first_red}, workflow="upscale")
        same = await submit(session, stack.url, {"image": again_red}, workflow="upscale")
        other = await run(session, stack.url, {"image": blue_id}, workflow="upscale")
    assert same["reused_from"] == first["id"]
    assert other["reused_from"] is None


async def test_another_users_results_are_not_reused_by_default(stack: Stack) -> None:
    async with api_session() as alice, api_session(ADMIN_TOKEN) as root:
        first = await run(alice, stack.url, FOX)
        theirs = await run(root, stack.url, FOX)
        mine = await submit(alice, stack.url, FOX)
    assert theirs["reused_from"] is None
    assert mine["reused_from"] == first["id"]


async def test_another_users_results_are_reused_where_the_operator_allows(
    make_stack: StackFactory,
) -> None:
    async with (
        make_stack(reuse_across_users=True) as stack,
        api_session() as alice,
        api_session(ADMIN_TOKEN) as root,
    ):
        first = await run(alice, stack.url, FOX)
        theirs = await submit(root, stack.url, FOX)
        async with alice.get(f"{stack.url}/api/jobs/{theirs['id']}") as r:
            hidden = r.status
        fetched = await output_bytes(root, stack.url, theirs)
    assert theirs["reused_from"] == first["id"]
    assert fetched
    assert hidden == 404  # the reusing job is root's own


async def test_a_result_whose_files_are_gone_is_run_again(stack: Stack, tmp_path: Path) -> None:
    async with api_session() as session:
        first = await run(session, stack.url, FOX)
        while_kept = await submit(session, stack.url, FOX)
        for file in (tmp_path / "outputs" / first["id"]).iterdir():
            file.unlink()
        again = await run(session, stack.url, FOX)
    assert while_kept["reused_from"] == first["id"]
    assert again["reused_from"] is None


async def test_an_identical_request_follows_the_running_one(slow_stack: Stack) -> None:
    async with api_session() as session:
        leader = await submit(session, slow_stack.url, SLOW_FOX)
        follower = await submit(session, slow_stack.url, SLOW_FOX)
        events = await follow(session, slow_stack.url, follower["id"])
        _, led = await get_json(session, f"{slow_stack.url}/api/jobs/{leader['id']}")
        _, followed = await get_json(session, f"{slow_stack.url}/api/jobs/{follower['id']}")
        assert follower["status"] == "pending"
        assert led["status"] == "done"
        assert events[-1]["type"] == "done"
        assert followed["reused_from"] == leader["id"]
        assert [o["filename"] for o in followed["outputs"]] == [
            o["filename"] for o in led["outputs"]
        ]
        assert await prompts(session, slow_stack) == 1


async def test_a_follower_runs_by_itself_when_its_leader_is_cancelled(
    make_stack: StackFactory,
) -> None:
    # room for both on ComfyUI: what keeps the follower from starting is its leader alone
    async with (
        run_simulator(SimulatorConfig(step_delay=0.03)) as comfy,
        make_stack(comfyui_url=f"{comfy}#capacity=2") as stack,
        api_session() as session,
    ):
        leader = await submit(session, stack.url, SLOW_FOX)
        follower = await submit(session, stack.url, SLOW_FOX)

        async def leader_runs() -> bool:
            return await job_status(session, stack.url, leader["id"]) == "processing"

        await wait_until(leader_runs)
        await session.post(f"{stack.url}/api/jobs/{leader['id']}/cancel")
        events = await follow(session, stack.url, follower["id"])
        cancelled = (await follow(session, stack.url, leader["id"]))[-1]
        _, ran = await get_json(session, f"{stack.url}/api/jobs/{follower['id']}")
    started = next(e for e in events if e["type"] == "started")
    assert cancelled["type"] == "cancelled"
    assert started["ts"] > cancelled["ts"]  # it waited for its leader, then ran
    assert events[-1]["type"] == "done"
    assert ran["reused_from"] is None


@pytest.fixture
def quick_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(followers, "SWEEP_INTERVAL", 0.05)


@pytest.mark.redis
async def test_followers_of_a_web_process_that_stopped_are_settled_by_another(
    quick_sweeps: None, slow_stack: Stack, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(redis_url, slow_stack.settings.comfyui_base, tmp_path)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    other = f"http://127.0.0.1:{settings.port}"
    async with api_session() as session:
        leader = await submit(session, slow_stack.url, SLOW_FOX)
        follower = await submit(session, other, SLOW_FOX)  # taken by the other process…
        await runner.cleanup()  # …which stops before the leader ends
        await follow(session, slow_stack.url, leader["id"])

        async def settled() -> bool:
            _, job = await get_json(session, f"{slow_stack.url}/api/jobs/{follower['id']}")
            return bool(job["status"] == "done")

        await wait_until(settled)
        _, followed = await get_json(session, f"{slow_stack.url}/api/jobs/{follower['id']}")
        assert followed["reused_from"] == leader["id"]
        assert await prompts(session, slow_stack) == 1
