"""The official Comfy SDK (`comfy-sdk` from PyPI), unchanged, against a running stack."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comfy_sdk import (
    AsyncComfy,
    Comfy,
    Forbidden,
    IdempotencyKeyReuse,
    InvalidWorkflow,
    MissingAsset,
    OutputReady,
    Progress,
    StatusChange,
)
from PIL import Image

from formy_async.auth import mint_token
from formy_async.embedded import Stack
from tests.conftest import EVERY_COMFYUI, ROOT, TEST_SECRET, TOKEN

pytestmark = EVERY_COMFYUI  # the v2 routes in front of each ComfyUI line

GRAPHS_TOKEN = mint_token(TEST_SECRET, "gina", graphs=True, ttl=3600)
UPSCALE = ROOT / "workflows" / "upscale.json"
TEXT_TO_IMAGE = ROOT / "workflows" / "text_to_image.json"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (24, 16), (200, 40, 90)).save(path)
    return path


@pytest.fixture
def at_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The SDK's one setting: where the deployment is."""
    monkeypatch.setenv("COMFY_BASE_URL", stack.url)
    return stack


@pytest.fixture
def client(at_stack: Stack) -> Iterator[Comfy]:
    with Comfy(api_key=GRAPHS_TOKEN) as comfy:
        yield comfy


def _small(graph: dict[str, Any]) -> dict[str, Any]:
    """text_to_image at 64×64 and 4 steps, so that a test's job is quick."""
    graph["5"]["inputs"].update(width=64, height=64)
    graph["3"]["inputs"]["steps"] = 4
    return graph


async def test_the_sdk_runs_a_workflow_file_with_an_uploaded_input_and_downloads_the_output(
    client: Comfy, photo: Path
) -> None:
    def scenario() -> bytes:
        workflow = client.workflows.from_file(UPSCALE)
        workflow.set_input("1", "image", client.assets.from_file(photo))
        job = client.run(workflow, timeout=60)
        assert job.status == "succeeded"
        [output] = job.get_outputs("3")
        assert (output.type, output.content_type) == ("image", "image/png")
        return output.to_bytes()

    data = await asyncio.to_thread(scenario)
    assert Image.open(io.BytesIO(data)).size == (48, 32)  # upscaled 2× on the simulator


async def test_a_second_upload_of_the_same_file_is_deduplicated_by_hash(
    client: Comfy, photo: Path
) -> None:
    def scenario() -> tuple[bool | None, bool | None, str, str]:
        first = client.assets.from_file(photo)
        first.commit()
        second = client.assets.from_file(photo)
        second.commit()
        assert first.id != second.id
        return first.created_new, second.created_new, first.hash, second.hash

    first_new, second_new, first_hash, second_hash = await asyncio.to_thread(scenario)
    assert (first_new, second_new) == (True, False)
    assert first_hash == second_hash and first_hash.startswith("blake3:")


async def test_the_async_client_reads_progress_output_and_status_events(at_stack: Stack) -> None:
    async with AsyncComfy(api_key=GRAPHS_TOKEN) as comfy:
        workflow = comfy.workflows.from_json(_small(json.loads(TEXT_TO_IMAGE.read_text())))
        job = await comfy.submit(workflow)
        seen = [event async for event in job.events()]
        await job.refresh()
    assert any(isinstance(e, Progress) and 0 < e.value <= 1 for e in seen)
    outputs = [e.output for e in seen if isinstance(e, OutputReady)]
    assert [o.node_id for o in outputs] == ["9"]
    assert seen[-1] == StatusChange(status="succeeded")
    assert job.status == "succeeded" and job.get_outputs("9")[0].size_bytes > 0


async def test_a_running_job_is_cancelled_through_the_sdk(
    slow_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFY_BASE_URL", slow_stack.url)
    graph = json.loads(TEXT_TO_IMAGE.read_text())
    graph["3"]["inputs"]["steps"] = 200  # 6 s on the slow simulator
    async with AsyncComfy(api_key=GRAPHS_TOKEN) as comfy:
        job = await comfy.submit(comfy.workflows.from_json(graph))
        async for event in job.events():
            if isinstance(event, Progress):
                break
        await job.cancel()
        assert job.status in ("canceling", "canceled")
        await job.wait(timeout=30)
    assert job.status == "canceled"


async def test_a_refused_graph_raises_the_sdks_own_error(client: Comfy) -> None:
    graph = {"1": {"class_type": "ShellCommand", "inputs": {}}}
    workflow = client.workflows.from_json(graph)
    with pytest.raises(InvalidWorkflow) as refused:
        await asyncio.to_thread(client.submit, workflow)
    assert "ShellCommand" in refused.value.message
    assert refused.value.details is not None
    assert refused.value.details["reason"] == "node_not_allowed"


async def test_a_graph_naming_an_unknown_asset_raises_missing_asset(client: Comfy) -> None:
    graph = json.loads(UPSCALE.read_text())
    graph["1"]["inputs"]["image"] = {"__type": "core/ASSET", "info": {"id": "no-such-asset"}}
    with pytest.raises(MissingAsset):
        await asyncio.to_thread(client.submit, client.workflows.from_json(graph))


async def test_a_token_without_the_graphs_scope_is_forbidden(at_stack: Stack) -> None:
    def scenario() -> None:
        with Comfy(api_key=TOKEN) as plain:
            plain.submit(plain.workflows.from_file(UPSCALE))

    with pytest.raises(Forbidden):
        await asyncio.to_thread(scenario)


async def test_a_reused_idempotency_key_is_refused(client: Comfy) -> None:
    workflow = client.workflows.from_json(_small(json.loads(TEXT_TO_IMAGE.read_text())))
    first = await asyncio.to_thread(client.submit, workflow, idempotency_key="order-17")
    with pytest.raises(IdempotencyKeyReuse) as refused:
        await asyncio.to_thread(client.submit, workflow, idempotency_key="order-17")
    assert refused.value.idempotency_key == "order-17"
    assert first.id in refused.value.message


async def test_jobs_are_listed_by_their_labels_and_give_back_their_workflow(
    client: Comfy,
) -> None:
    graph = _small(json.loads(TEXT_TO_IMAGE.read_text()))

    def scenario() -> tuple[list[str], dict[str, Any], str]:
        workflow = client.workflows.from_json(graph)
        tagged = client.submit(workflow, metadata={"campaign": "spring"})
        client.submit(workflow, metadata={"campaign": "autumn"})
        listed = [s.id for s in client.list_jobs(metadata={"campaign": "spring"})]
        assert listed == [tagged.id]
        back = tagged.get_workflow()
        return listed, back.graph, back.format

    _, back, kind = await asyncio.to_thread(scenario)
    assert (back, kind) == (graph, "api")
