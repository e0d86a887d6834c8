"""The image-editing workflows: catalogue entries, and each one run end to end on uploads."""

from __future__ import annotations

import io
from typing import Any

import structlog
from PIL import Image, ImageDraw

from formy_async.embedded import Stack
from formy_async.workflows import Catalogue

from .conftest import ROOT
from .helpers import api_session, follow, submit, upload_image

# saturated enough to stay recognisable under a 0.35-denoise blend with any generated pattern
RED, GREEN, BLUE, MAGENTA = (230, 30, 30), (20, 220, 30), (20, 30, 230), (230, 20, 210)
Pixel = tuple[int, ...]
EDIT_WORKFLOWS = {
    "background_change": ["image", "background"],
    "head_swap": ["image", "reference"],
    "image_to_image": ["image"],
    "pose_change": ["image", "pose"],
}


async def _run(
    stack: Stack, workflow: str, images: dict[str, Image.Image], **params: Any
) -> Image.Image:
    """Upload `images` as the workflow's image params, run it, and fetch its one output."""
    async with api_session() as session:
        for name, image in images.items():
            params[name] = await upload_image(session, stack.url, image)
        job = await submit(session, stack.url, workflow, **params)
        events = await follow(session, stack.url, job["id"])
        assert events[-1]["type"] == "done", events[-1]
        (output,) = events[-1]["outputs"]
        async with session.get(stack.url + output["url"]) as r:
            assert r.status == 200
            data = await r.read()
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG"
    assert picture.size == (output["width"], output["height"])
    return picture.convert("RGB")


def _leans(pixel: Pixel, colour: Pixel) -> bool:
    """Whether `pixel` is in `colour`'s family: its strong channels beat its weak ones."""
    strong = [p for p, c in zip(pixel, colour, strict=True) if c >= 128]
    weak = [p for p, c in zip(pixel, colour, strict=True) if c < 128]
    return min(strong) > max(weak) + 20


def test_catalogue_loads_every_shipped_workflow() -> None:
    catalogue = Catalogue.load(ROOT / "workflows")
    assert set(catalogue) == {"text_to_image", "upscale", "image_to_video", *EDIT_WORKFLOWS}


def test_image_params_are_marked_as_uploads_in_the_schema() -> None:
    catalogue = Catalogue.load(ROOT / "workflows")
    for name, image_params in EDIT_WORKFLOWS.items():
        properties = catalogue[name].schema()["properties"]
        marked = [p for p, spec in properties.items() if spec.get("format") == "formy-upload"]
        assert sorted(marked) == sorted(image_params), name
        assert set(image_params) <= set(catalogue[name].schema()["required"])


async def test_image_to_image_keeps_the_upload_layout(stack: Stack) -> None:
    source = Image.new("RGB", (96, 64), RED)
    source.paste(BLUE, (48, 0, 96, 64))
    picture = await _run(
        stack, "image_to_image", {"image": source}, prompt="a watercolour", strength=0.3
    )
    assert picture.size == (96, 64)
    assert _leans(picture.getpixel((12, 50)), RED)
    assert _leans(picture.getpixel((84, 50)), BLUE)


async def test_background_change_shows_the_background_around_the_subject(stack: Stack) -> None:
    subject = Image.new("RGBA", (128, 96), (0, 0, 0, 0))
    subject.paste((*RED, 255), (40, 24, 88, 72))
    background = Image.new("RGB", (64, 80), BLUE)
    picture = await _run(
        stack, "background_change", {"image": subject, "background": background}, seed=3
    )
    assert picture.size == (128, 96)
    assert _leans(picture.getpixel((64, 48)), RED)
    for corner in ((6, 90), (120, 6), (120, 90)):
        assert _leans(picture.getpixel(corner), BLUE), corner


async def test_head_swap_pastes_the_reference_through_its_alpha(stack: Stack) -> None:
    photo = Image.new("RGB", (128, 128), GREEN)
    head = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(head).ellipse((0, 0, 31, 31), fill=(*MAGENTA, 255))
    picture = await _run(
        stack, "head_swap", {"image": photo, "reference": head}, x=40, y=48, head_scale=2.0
    )
    assert picture.size == (128, 128)
    assert _leans(picture.getpixel((72, 80)), MAGENTA)  # the head's centre
    assert _leans(picture.getpixel((42, 50)), GREEN)  # inside its box, outside the ellipse
    assert _leans(picture.getpixel((110, 20)), GREEN)  # far from it


async def test_pose_change_follows_the_pose_skeleton(stack: Stack) -> None:
    photo = Image.new("RGB", (128, 128), (10, 10, 60))
    pose = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(pose).line((32, 20, 32, 60), fill=(0, 255, 0), width=4)
    picture = await _run(
        stack, "pose_change", {"image": photo, "pose": pose}, prompt="dancing", strength=0.6
    )
    assert picture.size == (128, 128)
    for y in range(48, 116, 8):
        assert _leans(picture.getpixel((64, y)), (0, 255, 0)), y


async def test_unknown_controlnet_is_refused_at_submission(stack: Stack) -> None:
    async with api_session() as session:
        image = await upload_image(session, stack.url, Image.new("RGB", (64, 64), RED))
        params = {"image": image, "pose": image, "controlnet": "nope.pth"}
        async with session.post(
            f"{stack.url}/api/jobs", json={"workflow": "pose_change", "params": params}
        ) as r:
            body = await r.json()
    assert (r.status, body["error"]["code"]) == (422, "model_not_found")
    assert "control_v11p_sd15_openpose.pth" in body["error"]["details"][0]["available"]


async def test_an_input_comfyui_already_holds_is_not_uploaded_again(stack: Stack) -> None:
    source = Image.new("RGB", (64, 48), RED)
    with structlog.testing.capture_logs() as logs:
        async with api_session() as session:
            image = await upload_image(session, stack.url, source)
            for scale in (2, 3):
                job = await submit(session, stack.url, "upscale", image=image, scale=scale)
                assert (await follow(session, stack.url, job["id"]))[-1]["type"] == "done"
    uploads = [e for e in logs if e["event"] == "image_uploaded"]
    assert len(uploads) == 1  # the second job found the same bytes under the same name
