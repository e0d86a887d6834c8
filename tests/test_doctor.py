"""`formy-async doctor`: a ComfyUI backend checked step by step with the upscale workflow."""

from __future__ import annotations

import pytest

from formy_async.cli import run_command
from formy_async.doctor import Step, run_doctor
from formy_async.workflows import Catalogue

from .conftest import ROOT, free_port


async def test_doctor_passes_every_step_on_a_working_comfyui(simulator_url: str) -> None:
    steps: list[Step] = []
    ok = await run_doctor(simulator_url, Catalogue.load(ROOT / "workflows"), steps.append)
    assert ok and len(steps) == 5 and all(s.ok for s in steps)
    assert "128×96" in steps[-1].detail


async def test_doctor_stops_at_the_first_failing_step() -> None:
    steps: list[Step] = []
    url = f"http://127.0.0.1:{free_port()}"
    ok = await run_doctor(url, Catalogue.load(ROOT / "workflows"), steps.append)
    assert not ok and [s.ok for s in steps] == [False]
    assert "unreachable" in steps[0].detail


def test_doctor_command_exits_1_when_comfyui_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_command(["doctor", "--comfyui", f"http://127.0.0.1:{free_port()}"])
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
