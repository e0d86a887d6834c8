"""`formy-async workflow import`: an API or editor export in, a graph and a manifest out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from formy_async.authoring.importer import ImportRefused, import_workflow
from formy_async.cli import run_command
from formy_async.workflows import Catalogue

from ..conftest import EVERY_COMFYUI, ROOT
from .conftest import EXPORTS

API_EXPORT = EXPORTS / "text_to_image.api.json"
EDITOR_EXPORT = EXPORTS / "text_to_image.editor.json"


async def _import(source: Path, url: str, directory: Path, name: str = "imported") -> Catalogue:
    await import_workflow(source, comfyui_url=url, workflows_dir=directory, name=name, force=False)
    return Catalogue.load(directory)


async def test_api_export_imports_as_a_workflow_that_loads_renders_and_fits(
    simulator_url: str, tmp_path: Path
) -> None:
    imported = await import_workflow(
        API_EXPORT, comfyui_url=simulator_url, workflows_dir=tmp_path, name="t2i", force=False
    )
    workflow = Catalogue.load(tmp_path)["t2i"]
    graph = workflow.render(
        workflow.resolve({"positive_prompt": "a red fox", "seed": 7}), output_prefix="formy/x"
    )
    assert graph["6"]["inputs"]["text"] == "a red fox" and graph["3"]["inputs"]["seed"] == 7
    assert imported.problems == []


@EVERY_COMFYUI
async def test_editor_export_yields_the_api_exports_graph(
    simulator_url: str, tmp_path: Path
) -> None:
    await _import(EDITOR_EXPORT, simulator_url, tmp_path)
    written = json.loads((tmp_path / "imported.json").read_text())
    assert written == json.loads(API_EXPORT.read_text())


async def test_editor_export_drafts_a_manifest_that_validates_and_renders(
    simulator_url: str, tmp_path: Path
) -> None:
    workflow = (await _import(EDITOR_EXPORT, simulator_url, tmp_path))["imported"]
    params = workflow.resolve({"positive_prompt": "a fox", "size": 512})
    graph = workflow.render(params, output_prefix="formy/x")
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (512, 512)


async def test_primitive_titled_input_becomes_one_param_for_every_input_it_feeds(
    simulator_url: str, tmp_path: Path
) -> None:
    workflow = (await _import(EDITOR_EXPORT, simulator_url, tmp_path))["imported"]
    size = workflow.manifest.params["size"]
    assert size.targets == ["5.width", "5.height"]
    assert "width" not in workflow.manifest.params


async def test_node_titled_input_becomes_a_param_of_that_name(
    simulator_url: str, tmp_path: Path
) -> None:
    graph = json.loads(API_EXPORT.read_text())
    graph["3"]["_meta"]["title"] = "input:sampler:sampler_name"
    graph["7"]["_meta"]["title"] = "input:avoid"
    source = tmp_path / "titled.json"
    source.write_text(json.dumps(graph))
    params = (await _import(source, simulator_url, tmp_path / "out"))["imported"].manifest.params
    assert params["sampler"].targets == ["3.sampler_name"] and "euler" in (
        params["sampler"].enum or []
    )
    assert params["avoid"].targets == ["7.text"]


async def test_draft_reads_types_ranges_and_folders_from_object_info(
    simulator_url: str, tmp_path: Path
) -> None:
    params = (await _import(API_EXPORT, simulator_url, tmp_path))["imported"].manifest.params
    assert (params["seed"].type, params["seed"].random) == ("integer", True)
    assert (params["steps"].minimum, params["steps"].maximum, params["steps"].default) == (
        1,
        10000,
        20,
    )
    assert (params["strength"].type, params["strength"].targets) == ("number", ["3.denoise"])
    assert (params["width"].multiple_of, params["batch_size"].targets) == (8, ["5.batch_size"])
    assert (params["model"].models, params["model"].default) == (
        "checkpoints",
        "sd_xl_base_1.0.safetensors",
    )
    assert params["positive_prompt"].required and params["negative_prompt"].targets == ["7.text"]


async def test_image_loader_becomes_a_required_image_param(
    simulator_url: str, tmp_path: Path
) -> None:
    manifest = (await _import(ROOT / "workflows" / "upscale.json", simulator_url, tmp_path))[
        "imported"
    ].manifest
    image = manifest.params["image"]
    assert (image.type, image.required, image.targets) == ("image", True, ["1.image"])
    assert manifest.outputs == ["3"]


async def test_import_refuses_to_overwrite_an_existing_workflow(
    simulator_url: str, tmp_path: Path
) -> None:
    await _import(API_EXPORT, simulator_url, tmp_path)
    with pytest.raises(ImportRefused, match=r"imported\.json and .*imported\.toml exist"):
        await _import(API_EXPORT, simulator_url, tmp_path)


async def test_import_with_force_replaces_the_workflow(simulator_url: str, tmp_path: Path) -> None:
    await _import(API_EXPORT, simulator_url, tmp_path)
    await import_workflow(
        EDITOR_EXPORT,
        comfyui_url=simulator_url,
        workflows_dir=tmp_path,
        name="imported",
        force=True,
    )
    assert "size" in Catalogue.load(tmp_path)["imported"].manifest.params


async def test_import_command_prints_what_it_proposed_and_left_fixed(
    simulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["workflow", "import", str(EDITOR_EXPORT), "--name", "fox"]
    argv += ["--comfyui", simulator_url, "--workflows-dir", str(tmp_path)]
    assert await asyncio.to_thread(run_command, argv) == 0
    out = capsys.readouterr().out
    assert "size (integer) → 5.width, 5.height: a primitive titled 'input:size'" in out
    assert "3.sampler_name = 'euler' (KSampler)" in out
    assert "node 10 (LoraLoader) is bypassed: left out" in out


async def test_import_command_refuses_an_export_of_unknown_shape(
    simulator_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "odd.json"
    source.write_text('{"hello": "world"}')
    argv = ["workflow", "import", str(source), "--comfyui", simulator_url]
    argv += ["--workflows-dir", str(tmp_path / "out")]
    assert await asyncio.to_thread(run_command, argv) == 2
    assert "neither ComfyUI's API format" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_shipped_fixture_is_the_shipped_graph() -> None:
    assert json.loads(API_EXPORT.read_text()) == json.loads(
        (ROOT / "workflows" / "text_to_image.json").read_text()
    )


async def test_api_export_using_a_node_the_backend_lacks_is_written_with_its_problems(
    simulator_url: str, tmp_path: Path
) -> None:
    graph = json.loads(API_EXPORT.read_text())
    graph["8"]["class_type"] = "VAEDecodeTiledMagic"
    source = tmp_path / "custom.json"
    source.write_text(json.dumps(graph))
    imported = await import_workflow(
        source, comfyui_url=simulator_url, workflows_dir=tmp_path / "out", name=None, force=False
    )
    assert imported.graph_path.exists() and imported.name == "custom"
    assert any("VAEDecodeTiledMagic' does not exist" in p.message for p in imported.problems)
