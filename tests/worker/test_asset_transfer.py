"""A graph's `core/ASSET` references become files on the ComfyUI server that runs the job."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from blake3 import blake3
from fakeredis import FakeAsyncRedis

from formy_async.asset_refs import with_files
from formy_async.comfy.client import ComfyClient
from formy_async.errors import MissingAsset
from formy_async.models import Asset, Job
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.storage import LocalStorage, asset_key
from formy_async.store.assets import AssetStore
from formy_async.worker.transfer import upload_assets

from ..helpers import traced_session


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SimpleNamespace]:
    http, requests = traced_session()
    async with (
        run_simulator(SimulatorConfig()) as url,
        http,
    ):
        yield SimpleNamespace(
            comfy=ComfyClient(url, http),
            storage=LocalStorage(tmp_path),
            assets=AssetStore(FakeAsyncRedis(), ttl=3600),
            requests=requests,
        )


async def _asset(world: SimpleNamespace, data: bytes, file_path: str, user: str = "ana") -> Asset:
    digest = blake3(data).hexdigest()
    asset = Asset(
        id=f"asset-{digest[:8]}-{file_path}",
        user=user,
        hash=f"blake3:{digest}",
        size=len(data),
        content_type="image/png",
        file_path=file_path,
        expires_at=time.time() + 3600,
    )
    await world.storage.put(asset_key(digest), data, asset.content_type)
    await world.assets.put(asset)
    return asset


def _job(*asset_ids: str, user: str = "ana") -> Job:
    graph: dict[str, Any] = {
        str(n): {
            "class_type": "LoadImage",
            "inputs": {"image": {"__type": "core/ASSET", "info": {"id": asset_id}}},
        }
        for n, asset_id in enumerate(asset_ids, 1)
    }
    return Job(id="j1", user=user, workflow="raw", params={}, graph=graph)


async def test_each_asset_is_uploaded_under_a_name_made_of_its_hash(
    world: SimpleNamespace,
) -> None:
    asset = await _asset(world, b"\x89PNG first", "photo.PNG")
    names = await upload_assets(world.comfy, world.storage, world.assets, _job(asset.id))
    assert names == {asset.id: f"formy_{asset.hex[:40]}.png"}
    rendered = with_files(_job(asset.id).graph or {}, names)
    assert rendered["1"]["inputs"]["image"] == names[asset.id]
    assert await world.comfy.has_input(names[asset.id])


async def test_bytes_the_server_holds_are_not_sent_again(world: SimpleNamespace) -> None:
    asset = await _asset(world, b"\x89PNG same", "a.png")
    await upload_assets(world.comfy, world.storage, world.assets, _job(asset.id))
    mark = len(world.requests)
    await upload_assets(world.comfy, world.storage, world.assets, _job(asset.id))
    assert world.requests[mark:] == ["HEAD /view"]


async def test_an_odd_file_name_takes_the_extension_of_its_content_type(
    world: SimpleNamespace,
) -> None:
    asset = await _asset(world, b"\x89PNG odd", "photo.p?ng")
    names = await upload_assets(world.comfy, world.storage, world.assets, _job(asset.id))
    assert names[asset.id].endswith(".png")


async def test_an_asset_gone_before_the_job_ran_fails_it_naming_the_asset(
    world: SimpleNamespace,
) -> None:
    asset = await _asset(world, b"\x89PNG gone", "g.png")
    await world.assets.delete(asset)
    with pytest.raises(MissingAsset, match=asset.id):
        await upload_assets(world.comfy, world.storage, world.assets, _job(asset.id))


async def test_another_users_asset_is_never_sent(world: SimpleNamespace) -> None:
    asset = await _asset(world, b"\x89PNG theirs", "t.png", user="bob")
    with pytest.raises(MissingAsset):
        await upload_assets(world.comfy, world.storage, world.assets, _job(asset.id, user="ana"))
