"""`formy-async doctor`: a ComfyUI backend checked step by step with the upscale workflow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from formy_async.cli import run_command
from formy_async.doctor import Step, run_doctor
from formy_async.workflows import Catalogue

from .conftest import ROOT, free_port


async def test_doctor_passes_every_step_on_a_working_comfyui(simulator_url: str) -> None:
    steps: list[Step] = []
    ok = await run_doctor(simulator_url, Catalogue.load(ROOT / "workflows"), steps.append)
    assert ok and len(steps) == 6 and all(s.ok for s in steps)
    assert "128×96" in steps[-2].detail


async def test_doctor_stops_at_the_first_failing_step() -> None:
    steps: list[Step] = []
    url = f"http://127.0.0.1:{free_port()}"
    ok = await run_doctor(url, Catalogue.load(ROOT / "workflows"), steps.append)
    assert not ok and [s.ok for s in steps] == [False]
    assert "unreachable" in steps[0].detail


async def test_doctor_holds_the_catalogues_workflows_against_the_backend(
    simulator_url: str, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "workflows", tmp_path, dirs_exist_ok=True)
    manifest = tmp_path / "text_to_image.toml"
    manifest.write_text(manifest.read_text().replace("sd_xl_base_1.0", "sd3_medium"))
    steps: list[Step] = []
    ok = await run_doctor(simulator_url, Catalogue.load(tmp_path), steps.append)
    assert not ok and [s.ok for s in steps] == [True] * 5 + [False]
    assert "text_to_image.toml: param 'model'" in steps[-1].detail
    assert "'sd3_medium.safetensors' is not in checkpoints" in steps[-1].detail


def test_doctor_command_exits_1_when_comfyui_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_command(["doctor", "--comfyui", f"http://127.0.0.1:{free_port()}"])
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
