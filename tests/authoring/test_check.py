"""`formy-async workflow check`: workflows held against the simulator, by file and line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from formy_async.authoring.check import check_workflows
from formy_async.cli import run_command
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.workflow_problems import Problem

from ..conftest import EVERY_COMFYUI, ROOT, free_port

SHIPPED = sorted(p.stem for p in (ROOT / "workflows").glob("*.toml"))


def _edit(path: Path, old: str, new: str) -> int:
    """Replace `old` (once) and answer the line the change is on."""
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


async def _problems(directory: Path, name: str, url: str) -> list[Problem]:
    return await check_workflows([directory / f"{name}.toml"], [url])


@EVERY_COMFYUI
async def test_shipped_workflows_fit_the_simulator(shipped: Path, simulator_url: str) -> None:
    manifests = [shipped / f"{name}.toml" for name in SHIPPED]
    assert await check_workflows(manifests, [simulator_url]) == []


async def test_check_finds_a_node_class_the_backend_lacks(
    shipped: Path, simulator_url: str
) -> None:
    line = _edit(shipped / "upscale.json", '"ImageScaleBy"', '"ImageScaleByMagic"')
    (problem,) = await _problems(shipped, "upscale", simulator_url)
    assert (problem.file, problem.line) == (str(shipped / "upscale.json"), line)
    assert "class 'ImageScaleByMagic' does not exist" in problem.message


async def test_check_finds_an_input_the_node_does_not_have(
    shipped: Path, simulator_url: str
) -> None:
    line = _edit(shipped / "text_to_image.json", '"steps": 20,', '"steps": 20,\n      "eta": 0.5,')
    (problem,) = await _problems(shipped, "text_to_image", simulator_url)
    assert (problem.file, problem.line) == (str(shipped / "text_to_image.json"), line + 1)
    assert "node 3 (KSampler) has no input 'eta'" in problem.message


async def test_check_finds_a_default_outside_the_nodes_range(
    shipped: Path, simulator_url: str
) -> None:
    line = _edit(shipped / "text_to_image.toml", "default = 20\n", "default = 20000\n")
    (problem,) = await _problems(shipped, "text_to_image", simulator_url)
    assert (problem.file, problem.line) == (str(shipped / "text_to_image.toml"), line)
    assert "param 'steps'" in problem.message
    assert "default 20000 is outside the input's range 1…10000" in problem.message


async def test_check_finds_a_default_model_the_backend_does_not_have(
    shipped: Path, simulator_url: str
) -> None:
    line = _edit(
        shipped / "text_to_image.toml",
        'default = "sd_xl_base_1.0.safetensors"',
        'default = "sd3_medium.safetensors"',
    )
    (problem,) = await _problems(shipped, "text_to_image", simulator_url)
    assert (problem.file, problem.line) == (str(shipped / "text_to_image.toml"), line)
    assert "model 'sd3_medium.safetensors' is not in checkpoints" in problem.message


async def test_check_finds_a_link_of_the_wrong_type(shipped: Path, simulator_url: str) -> None:
    _edit(shipped / "text_to_image.json", '"vae": ["4", 2]', '"vae": ["4", 1]')
    (problem,) = await _problems(shipped, "text_to_image", simulator_url)
    assert "input 'vae' takes VAE, and node 4 (CheckpointLoaderSimple) output 1 is CLIP" in (
        problem.message
    )


async def test_check_finds_an_enum_value_the_node_does_not_offer(
    shipped: Path, simulator_url: str
) -> None:
    _edit(shipped / "upscale.toml", '"lanczos"]', '"lanczos", "magic"]')
    (problem,) = await _problems(shipped, "upscale", simulator_url)
    assert "param 'method'" in problem.message and "['magic'] are not among" in problem.message


async def test_check_reports_a_manifest_the_catalogue_would_refuse_with_its_line(
    shipped: Path, simulator_url: str
) -> None:
    line = _edit(shipped / "upscale.toml", 'type = "number"', 'type = "decimal"')
    (problem,) = await _problems(shipped, "upscale", simulator_url)
    assert (problem.line, problem.backend) == (line, None)
    assert problem.message.startswith("params.scale.type:")


async def test_check_names_a_backend_it_cannot_reach(shipped: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    (problem,) = await _problems(shipped, "upscale", url)
    assert problem.backend == url and "unreachable" in problem.message


async def test_check_command_exits_1_naming_file_and_line_of_each_problem(
    shipped: Path, simulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _edit(shipped / "upscale.json", '"ImageScaleBy"', '"ImageScaleByMagic"')
    argv = ["workflow", "check", "upscale", "text_to_image", "--comfyui", simulator_url]
    code = await asyncio.to_thread(run_command, [*argv, "--workflows-dir", str(shipped)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{shipped / 'upscale.json'}:{line}: node 2: class 'ImageScaleByMagic'" in out
    assert "1 problem(s) in 2 workflow(s)" in out


async def test_check_command_exits_0_when_every_workflow_fits(
    shipped: Path, simulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["workflow", "check", "--comfyui", simulator_url, "--workflows-dir", str(shipped)]
    assert await asyncio.to_thread(run_command, argv) == 0
    assert "7 workflow(s) fit" in capsys.readouterr().out


async def test_check_command_holds_workflows_against_every_backend_of_the_pool(
    shipped: Path,
    simulator_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bare = SimulatorConfig(step_delay=0, checkpoints=[])  # a backend without the checkpoint
    async with run_simulator(bare) as bare_url:
        monkeypatch.setenv("COMFYUI_URL", f"{simulator_url},{bare_url}")
        argv = ["workflow", "check", "upscale", "text_to_image", "--workflows-dir", str(shipped)]
        assert await asyncio.to_thread(run_command, argv) == 1
    (problem,) = [line for line in capsys.readouterr().out.splitlines() if "(on " in line]
    assert "param 'model'" in problem and problem.endswith(f"(on {bare_url})")
