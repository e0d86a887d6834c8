"""POST /prompt validation: the documented 400 bodies, partial acceptance and malformed bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from formy_async.simulator import SimulatorConfig, run_simulator

Graph = dict[str, Any]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with run_simulator(SimulatorConfig(step_delay=0)) as base:
        yield base


def graph(**overrides: Graph) -> Graph:
    """EmptyImage -> ImageScaleBy -> SaveImage, with nodes replaced as given (by id)."""
    base: Graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "scale_by": 2.0},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v"}},
    }
    base.update({key.lstrip("n"): value for key, value in overrides.items()})
    return base


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(f"{url}/prompt", json=body) as response:
        return response.status, await response.json()


def node_error_types(body: Any, node_id: str) -> list[str]:
    return [error["type"] for error in body["node_errors"][node_id]["errors"]]


async def test_body_without_prompt_is_no_prompt(url: str, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, url, {"client_id": "x"})
    assert status == 400
    assert body["error"]["type"] == "no_prompt"
    assert body["error"]["message"] == "No prompt provided"
    assert body["node_errors"] == {}


async def test_unknown_class_type_is_invalid_prompt(url: str, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, url, {"prompt": graph(n3={"class_type": "Nope", "inputs": {}})})
    assert status == 400
    assert body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"] == "Cannot execute because node Nope does not exist."
    assert body["error"]["details"] == "Node ID '#3'"
    assert body["node_errors"] == {}


async def test_missing_class_type_is_invalid_prompt(url: str, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, url, {"prompt": graph(n2={"inputs": {}})})
    assert status == 400
    assert body["error"]["type"] == "invalid_prompt"
    assert body["error"]["message"].endswith("missing the class_type property.")


@pytest.mark.parametrize("prompt", [{}, {"1": graph()["1"]}])
async def test_prompt_without_output_is_prompt_no_outputs(
    url: str, http: aiohttp.ClientSession, prompt: Graph
) -> None:
    status, body = await post(http, url, {"prompt": prompt})
    assert status == 400
    assert body["error"] == {
        "type": "prompt_no_outputs", "message": "Prompt has no outputs",
        "details": "", "extra_info": {},
    }  # fmt: skip


async def test_missing_required_input_is_required_input_missing(
    url: str, http: aiohttp.ClientSession
) -> None:
    bad = {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "scale_by": 2.0}}
    status, body = await post(http, url, {"prompt": graph(n2=bad)})
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert node_error_types(body, "2") == ["required_input_missing"]
    error = body["node_errors"]["2"]["errors"][0]
    assert error["details"] == "upscale_method"
    assert error["extra_info"] == {"input_name": "upscale_method"}
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"]
    assert body["node_errors"]["2"]["class_type"] == "ImageScaleBy"


async def test_link_of_wrong_length_is_bad_linked_input(
    url: str, http: aiohttp.ClientSession
) -> None:
    bad = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0, 0]}}
    status, body = await post(http, url, {"prompt": graph(n2=bad)})
    assert status == 400
    assert node_error_types(body, "2") == ["bad_linked_input"]
    assert body["node_errors"]["2"]["errors"][0]["extra_info"]["received_value"] == ["1", 0, 0]


async def test_latent_into_image_is_return_type_mismatch(
    url: str, http: aiohttp.ClientSession
) -> None:
    latent = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    bad = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    status, body = await post(http, url, {"prompt": graph(n1=latent, n2=bad)})
    assert status == 400
    assert node_error_types(body, "2") == ["return_type_mismatch"]
    extra = body["node_errors"]["2"]["errors"][0]["extra_info"]
    assert (extra["received_type"], extra["linked_node"]) == ("LATENT", ["1", 0])


@pytest.mark.parametrize(
    ("link", "exception_type"), [(["99", 0], "KeyError"), (["1", 5], "IndexError")]
)
async def test_dangling_link_is_exception_during_inner_validation(
    url: str, http: aiohttp.ClientSession, link: list[Any], exception_type: str
) -> None:
    bad = {"class_type": "ImageInvert", "inputs": {"image": link}}
    status, body = await post(http, url, {"prompt": graph(n2=bad)})
    assert status == 400
    assert node_error_types(body, "2") == ["exception_during_inner_validation"]
    extra = body["node_errors"]["2"]["errors"][0]["extra_info"]
    assert extra["exception_type"] == exception_type
    assert isinstance(extra["traceback"], list)


async def test_value_below_min_is_value_smaller_than_min(
    url: str, http: aiohttp.ClientSession
) -> None:
    bad = {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "area",
                                                    "scale_by": 0.0}}  # fmt: skip
    status, body = await post(http, url, {"prompt": graph(n2=bad)})
    assert status == 400
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "value_smaller_than_min"
    assert error["message"] == "Value 0.0 smaller than min of 0.01"
    assert error["details"] == "scale_by"
    assert error["extra_info"]["received_value"] == 0.0
    assert error["extra_info"]["input_config"][0] == "FLOAT"


async def test_value_above_max_is_value_bigger_than_max(
    url: str, http: aiohttp.ClientSession
) -> None:
    bad = {"class_type": "EmptyImage",
           "inputs": {"width": 99999, "height": 32, "batch_size": 1, "color": 0}}  # fmt: skip
    status, body = await post(http, url, {"prompt": graph(n1=bad)})
    assert status == 400
    assert node_error_types(body, "1") == ["value_bigger_than_max"]
    assert (
        body["node_errors"]["1"]["errors"][0]["message"] == "Value 99999 bigger than max of 16384"
    )


async def test_unconvertible_value_is_invalid_input_type(
    url: str, http: aiohttp.ClientSession
) -> None:
    bad = {"class_type": "EmptyImage",
           "inputs": {"width": "abc", "height": 32, "batch_size": 1, "color": 0}}  # fmt: skip
    status, body = await post(http, url, {"prompt": graph(n1=bad)})
    assert status == 400
    error = body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Failed to convert an input value to a INT value"


async def test_combo_value_not_allowed_is_value_not_in_list(
    url: str, http: aiohttp.ClientSession
) -> None:
    bad = {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "nope",
                                                    "scale_by": 2.0}}  # fmt: skip
    status, body = await post(http, url, {"prompt": graph(n2=bad)})
    assert status == 400
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == (
        "upscale_method: 'nope' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    )


async def test_long_combo_leaves_input_config_null(url: str, http: aiohttp.ClientSession) -> None:
    sampler = {"class_type": "KSampler", "inputs": {"sampler_name": "nope"}}
    save = {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}}
    decode = {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["4", 0]}}
    status, body = await post(http, url, {"prompt": {"4": sampler, "5": decode, "6": save}})
    assert status == 400
    errors = {e["type"]: e for e in body["node_errors"]["4"]["errors"]}
    assert errors["value_not_in_list"]["extra_info"]["input_config"] is None
    assert "(list of length" in errors["value_not_in_list"]["details"]


async def test_load_image_of_missing_file_is_custom_validation_failed(
    url: str, http: aiohttp.ClientSession
) -> None:
    load = {"class_type": "LoadImage", "inputs": {"image": "x.png"}}
    save = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "v"}}
    status, body = await post(http, url, {"prompt": {"1": load, "2": save}})
    assert status == 400
    error = body["node_errors"]["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "image - Invalid image file: x.png"


async def test_one_bad_output_still_queues_the_good_one(
    url: str, http: aiohttp.ClientSession
) -> None:
    prompt = graph()
    prompt["4"] = {
        "class_type": "ImageScaleBy",
        "inputs": {"image": ["1", 0], "upscale_method": "nope", "scale_by": 1.0},
    }
    prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}}
    status, body = await post(http, url, {"prompt": prompt})
    assert status == 200
    assert list(body["node_errors"]) == ["4"]
    assert body["node_errors"]["4"]["dependent_outputs"] == ["5"]
    async with http.get(f"{url}/queue") as response:
        queue = await response.json()
    items = queue["queue_running"] + queue["queue_pending"]
    assert items[0][4] == ["3"]


async def test_cycle_fails_with_empty_node_errors(url: str, http: aiohttp.ClientSession) -> None:
    prompt = graph(n2={"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}})
    prompt["4"] = {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}}
    status, body = await post(http, url, {"prompt": prompt})
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"] == {}


async def test_non_json_body_is_500_text(url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{url}/prompt", data=b"{not json") as response:
        assert response.status == 500
        assert response.content_type == "text/plain"


async def test_constants_are_converted_before_queueing(
    url: str, http: aiohttp.ClientSession
) -> None:
    prompt = graph()
    prompt["1"]["inputs"]["width"] = "40"
    status, body = await post(http, url, {"prompt": prompt, "prompt_id": 12345})
    assert (status, body["prompt_id"]) == (200, "12345")
    async with http.get(f"{url}/queue") as response:
        queue = await response.json()
    item = (queue["queue_running"] + queue["queue_pending"])[0]
    assert item[2]["1"]["inputs"]["width"] == 40
