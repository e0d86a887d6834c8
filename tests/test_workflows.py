"""The workflow catalogue: loading, params validation, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from formy_async.embedded import Stack
from formy_async.errors import InvalidParams, NotFound
from formy_async.workflows import Catalogue, WorkflowError

from .helpers import api_session, upload_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load(ROOT / "workflows")


def test_catalogue_has_text_to_image(catalogue: Catalogue) -> None:
    assert "text_to_image" in catalogue


def test_unknown_workflow_is_not_found(catalogue: Catalogue) -> None:
    with pytest.raises(NotFound, match="no workflow named 'nope'"):
        catalogue.get_or_raise("nope")


def test_missing_seed_is_random_and_recorded(catalogue: Catalogue) -> None:
    params = catalogue["text_to_image"].resolve({"prompt": "a fox"})
    assert isinstance(params["seed"], int)
    assert 0 <= params["seed"] <= 2**32 - 1


def test_given_seed_is_kept(catalogue: Catalogue) -> None:
    assert catalogue["text_to_image"].resolve({"prompt": "a fox", "seed": 7})["seed"] == 7


def test_aspect_ratio_sets_width_and_height(catalogue: Catalogue) -> None:
    params = catalogue["text_to_image"].resolve({"prompt": "a", "aspect_ratio": "16:9"})
    assert (params["width"], params["height"]) == (1344, 768)


def test_explicit_width_wins_over_aspect_ratio(catalogue: Catalogue) -> None:
    params = catalogue["text_to_image"].resolve(
        {"prompt": "a", "aspect_ratio": "16:9", "width": 512}
    )
    assert (params["width"], params["height"]) == (512, 768)


@pytest.mark.parametrize(
    ("params", "param", "error_type"),
    [
        ({}, "prompt", "missing"),
        ({"prompt": 3}, "prompt", "string_type"),
        ({"prompt": "a", "steps": "many"}, "steps", "int_type"),
        ({"prompt": "a", "steps": 0}, "steps", "greater_than_equal"),
        ({"prompt": "a", "batch_size": 5}, "batch_size", "less_than_equal"),
        ({"prompt": "a", "width": 513}, "width", "multiple_of"),
        ({"prompt": "a", "aspect_ratio": "2:1"}, "aspect_ratio", "literal_error"),
        ({"prompt": "a", "colour": "red"}, "colour", "extra_forbidden"),
    ],
)
def test_bad_params_name_the_param(
    catalogue: Catalogue, params: dict[str, object], param: str, error_type: str
) -> None:
    with pytest.raises(InvalidParams) as info:
        catalogue["text_to_image"].resolve(params)
    assert {"param": param, "type": error_type} in [
        {"param": d["param"], "type": d["type"]} for d in info.value.details
    ]
    assert param in info.value.message


def test_render_places_params_and_output_prefix(catalogue: Catalogue) -> None:
    workflow = catalogue["text_to_image"]
    params = workflow.resolve({"prompt": "a red fox", "seed": 3, "batch_size": 2})
    graph = workflow.render(params, output_prefix="formy/job1")
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["3"]["inputs"]["seed"] == 3
    assert graph["5"]["inputs"]["batch_size"] == 2
    assert graph["9"]["inputs"]["filename_prefix"] == "formy/job1"


def test_render_leaves_the_catalogue_graph_untouched(catalogue: Catalogue) -> None:
    workflow = catalogue["text_to_image"]
    workflow.render(workflow.resolve({"prompt": "changed"}), output_prefix="x")
    assert workflow.graph["6"]["inputs"]["text"] == ""


def test_schema_is_generated_from_the_params_model(catalogue: Catalogue) -> None:
    schema = catalogue["text_to_image"].schema()
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["batch_size"]["maximum"] == 4
    assert schema["additionalProperties"] is False


def _write(
    tmp_path: Path,
    manifest: str,
    graph: str = '{"1": {"class_type": "SaveImage", '
    '"inputs": {"filename_prefix": "x", "images": ["2", 0]}}}',
) -> Path:
    (tmp_path / "w.toml").write_text(manifest)
    (tmp_path / "w.json").write_text(graph)
    return tmp_path


def test_broken_manifest_names_the_file_and_line(tmp_path: Path) -> None:
    _write(
        tmp_path,
        'name = "w"\ntitle = "W"\ngraph = "w.json"\noutputs = ["1"]\n[params.p]\ntype = "colour"\n',
    )
    with pytest.raises(WorkflowError, match=r"w\.toml:6: params\.p\.type"):
        Catalogue.load(tmp_path)


def test_target_outside_the_graph_is_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        'name = "w"\ntitle = "W"\ngraph = "w.json"\noutputs = ["1"]\n[params.p]\n'
        'type = "string"\ntargets = ["7.text"]\n',
    )
    with pytest.raises(WorkflowError, match="names no node"):
        Catalogue.load(tmp_path)


def test_graph_that_is_not_json_is_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        'name = "w"\ntitle = "W"\ngraph = "w.json"\noutputs = ["1"]\n[params]\n',
        graph="{not json",
    )
    with pytest.raises(WorkflowError, match=r"w\.json"):
        Catalogue.load(tmp_path)


# --- positions inside an image (`within`) ---------------------------------------------------

HEAD_SWAP = {"image": "a" * 32, "reference": "b" * 32}


def test_position_past_the_photos_width_names_the_param(catalogue: Catalogue) -> None:
    workflow = catalogue["head_swap"]
    params = workflow.resolve({**HEAD_SWAP, "x": 5000, "y": 10})
    with pytest.raises(InvalidParams, match="x: 5000 is outside the image") as raised:
        workflow.check_within(params, {"image": (800, 600), "reference": (100, 100)})
    assert raised.value.details == [
        {
            "param": "x",
            "type": "outside_image",
            "message": "5000 is outside the image (800 pixels wide): it must be below 800",
        }
    ]


def test_positions_inside_the_photo_pass(catalogue: Catalogue) -> None:
    workflow = catalogue["head_swap"]
    params = workflow.resolve({**HEAD_SWAP, "x": 799, "y": 599})
    workflow.check_within(params, {"image": (800, 600), "reference": (100, 100)})


def test_position_past_the_photos_height_is_refused_too(catalogue: Catalogue) -> None:
    workflow = catalogue["head_swap"]
    params = workflow.resolve({**HEAD_SWAP, "y": 600})
    with pytest.raises(InvalidParams, match=r"y: 600 is outside the image \(600 pixels high\)"):
        workflow.check_within(params, {"image": (800, 600)})


def test_within_is_in_the_params_schema(catalogue: Catalogue) -> None:
    properties = catalogue["head_swap"].schema()["properties"]
    assert properties["x"]["x-formy-within"] == "image.width"


def test_within_naming_a_param_that_is_not_an_image_is_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        'name = "w"\ntitle = "W"\ngraph = "w.json"\noutputs = ["1"]\n[params.x]\n'
        'type = "integer"\nwithin = "prompt.width"\n',
    )
    with pytest.raises(WorkflowError, match="within names 'prompt', which is not an image"):
        Catalogue.load(tmp_path)


async def test_head_swap_placed_off_the_photo_answers_422_naming_the_param(stack: Stack) -> None:
    async with api_session() as session:
        photo = await upload_image(session, stack.url, Image.new("RGB", (80, 60), "grey"))
        head = await upload_image(session, stack.url, Image.new("RGBA", (16, 16), "tan"))
        body = {"workflow": "head_swap", "params": {"image": photo, "reference": head, "x": 500}}
        async with session.post(f"{stack.url}/api/jobs", json=body) as answer:
            error = (await answer.json())["error"]
    assert (answer.status, error["code"]) == (422, "invalid_params")
    assert [d["param"] for d in error["details"]] == ["x"]
    assert "it must be below 80" in error["message"]
