"""The catalogue follows its directory while the service runs: added, changed and removed
workflows are served within seconds, a broken file is refused, and a running job keeps the
workflow it started with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from aiohttp import web

from formy_async.catalogue_watch import CatalogueWatch
from formy_async.web.app import create_app
from formy_async.workflows import Catalogue

from .conftest import FIXTURE_WORKFLOWS, ROOT, StackFactory, stack_settings
from .helpers import api_session, follow, get_json, submit, wait_until


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    target = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows", target)
    return target


def add_fox(directory: Path) -> None:
    """A copy of text_to_image under another name."""
    manifest = (directory / "text_to_image.toml").read_text()
    (directory / "fox.toml").write_text(manifest.replace('name = "text_to_image"', 'name = "fox"'))


async def watching(directory: Path) -> tuple[Catalogue, CatalogueWatch]:
    catalogue = Catalogue.load(directory)
    watch = CatalogueWatch(catalogue, directory, interval=0)
    assert not await watch.check()  # its first look: nothing changed
    return catalogue, watch


async def test_a_change_made_before_the_watch_began_is_still_seen(directory: Path) -> None:
    catalogue = Catalogue.load(directory)
    add_fox(directory)
    assert await CatalogueWatch(catalogue, directory, interval=0).check()
    assert "fox" in catalogue


async def test_an_added_workflow_is_served_after_the_next_look(directory: Path) -> None:
    catalogue, watch = await watching(directory)
    add_fox(directory)
    assert await watch.check()
    assert "fox" in catalogue


async def test_a_removed_workflow_is_no_longer_served(directory: Path) -> None:
    catalogue, watch = await watching(directory)
    (directory / "upscale.toml").unlink()
    assert await watch.check()
    assert "upscale" not in catalogue


async def test_a_broken_edit_is_refused_and_the_last_good_catalogue_stays(directory: Path) -> None:
    catalogue, watch = await watching(directory)
    before = catalogue["upscale"].version
    (directory / "upscale.toml").write_text("name = [broken")
    assert not await watch.check()
    assert catalogue["upscale"].version == before


async def test_a_changed_workflow_has_a_new_version_and_the_old_object_is_unchanged(
    directory: Path,
) -> None:
    catalogue, watch = await watching(directory)
    taken = catalogue["text_to_image"]
    path = directory / "text_to_image.toml"
    path.write_text(path.read_text().replace('title = "Text to image"', 'title = "Fox"'))
    assert await watch.check()
    assert catalogue["text_to_image"].manifest.title == "Fox"
    assert catalogue["text_to_image"].version != taken.version
    assert taken.manifest.title == "Text to image"


async def test_a_workflow_added_while_the_stack_runs_is_usable_within_seconds(
    make_stack: StackFactory, directory: Path, redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    second = stack_settings(
        redis_url, simulator_url, tmp_path, workflows_dir=directory, catalogue_reload=0.1
    )
    runner = web.AppRunner(create_app(second))
    async with (
        make_stack(workflows_dir=directory, catalogue_reload=0.1) as stack,
        api_session() as session,
    ):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", second.port).start()
        other = f"http://127.0.0.1:{second.port}"
        try:
            add_fox(directory)

            async def listed() -> bool:  # by both web processes
                for base in (stack.url, other):
                    _, body = await get_json(session, f"{base}/api/workflows")
                    if "fox" not in [w["name"] for w in body["workflows"]]:
                        return False
                return True

            await wait_until(listed, timeout=10)
            params = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64}
            job = await submit(session, other, "fox", **params)  # the stack's worker runs it
            events = await follow(session, stack.url, job["id"])
        finally:
            await runner.cleanup()
    assert events[-1]["type"] == "done"


async def test_a_running_job_keeps_the_graph_it_started_with(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "fixtures"
    shutil.copytree(FIXTURE_WORKFLOWS, directory)
    async with (
        make_stack(workflows_dir=directory, catalogue_reload=0.1) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, "slow", steps=30, delay=0.03)

        async def running() -> bool:
            _, record = await get_json(session, f"{stack.url}/api/jobs/{job['id']}")
            return bool(record["status"] == "processing")

        await wait_until(running)
        _, before = await get_json(session, f"{stack.url}/api/workflows/slow")
        graph = directory / "slow.json"
        graph.write_text(
            graph.read_text().replace('"width": 32, "height": 32', '"width": 16, "height": 16')
        )

        async def reloaded() -> bool:
            _, now = await get_json(session, f"{stack.url}/api/workflows/slow")
            return bool(now["version"] != before["version"])

        await wait_until(reloaded, timeout=10)
        events = await follow(session, stack.url, job["id"])
    assert events[-1]["type"] == "done"
    assert (events[-1]["outputs"][0]["width"], events[-1]["outputs"][0]["height"]) == (32, 32)
