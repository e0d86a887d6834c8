"""Shared pieces of the authoring tests: the simulator's node definitions, shipped files."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest

from formy_async.authoring.nodes import NodeDef, fetch_nodes
from formy_async.comfy.client import ComfyClient

from ..conftest import ROOT

EXPORTS = ROOT / "tests" / "fixtures" / "exports"


async def simulator_nodes(url: str, classes: set[str]) -> dict[str, NodeDef]:
    async with aiohttp.ClientSession() as session:
        return await fetch_nodes(ComfyClient(url, session), classes)


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A workflows directory holding copies of the shipped workflows."""
    directory = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows", directory)
    return directory
