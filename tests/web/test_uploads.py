"""Uploads: only real PNG, JPEG and WEBP images within the limits; clear 4xx errors otherwise."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest
from PIL import Image

from formy_async.embedded import Stack
from formy_async.worker.retention import clean_up

from ..conftest import StackFactory
from ..helpers import api_session, follow, submit


def png(width: int = 64, height: int = 48, **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, format="PNG", **save)
    return out.getvalue()


async def upload(
    stack: Stack, data: bytes, filename: str = "in.png", field: str = "file"
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type="application/octet-stream")
    async with (
        api_session() as session,
        session.post(f"{stack.url}/api/uploads", data=form) as r,
    ):
        return r.status, await r.json()


async def test_upload_answers_id_format_and_size(fake_stack: Stack) -> None:
    status, body = await upload(fake_stack, png(64, 48))
    assert status == 201
    assert (body["format"], body["width"], body["height"]) == ("png", 64, 48)
    assert len(body["id"]) == 32


async def test_uploaded_image_can_be_fetched(fake_stack: Stack) -> None:
    _, body = await upload(fake_stack, png(10, 10))
    async with api_session() as session, session.get(fake_stack.url + body["url"]) as r:
        assert (r.status, r.content_type) == (200, "image/png")
        assert Image.open(io.BytesIO(await r.read())).size == (10, 10)


async def test_an_upload_answers_a_range_and_refuses_one_past_its_end_in_json(
    fake_stack: Stack,
) -> None:
    _, body = await upload(fake_stack, png(10, 10))
    url = fake_stack.url + body["url"]
    async with api_session() as session:
        async with session.get(url, headers={"Range": "bytes=0-7"}) as r:
            assert (r.status, await r.read()) == (206, b"\x89PNG\r\n\x1a\n")
        async with session.get(url, headers={"Range": "bytes=100000-"}) as r:
            assert r.status == 416
            assert (await r.json())["error"]["code"] == "range_not_satisfiable"


async def test_exif_orientation_is_applied_and_metadata_dropped(fake_stack: Stack) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise
    exif[0x010F] = "SecretCam"
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    _, body = await upload(fake_stack, out.getvalue(), "photo.jpg")
    assert (body["format"], body["width"], body["height"]) == ("jpeg", 20, 40)
    async with api_session() as session, session.get(fake_stack.url + body["url"]) as r:
        stored = Image.open(io.BytesIO(await r.read()))
    assert not stored.getexif()


def _truncated_png() -> bytes:
    data = png(200, 200)
    return data[: len(data) // 2]


def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG")
    return out.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'


@pytest.mark.parametrize(
    ("data", "filename", "status", "code"),
    [
        (b"just some text, honestly", "note.png", 415, "unsupported_image"),
        (SVG, "drawing.svg", 415, "unsupported_image"),
        (b"GIF89a" + png()[8:], "anim.gif", 415, "unsupported_image"),
        (_truncated_png(), "half.png", 422, "corrupt_image"),
        (_bomb(), "bomb.png", 422, "image_too_large"),
        (b"", "empty.png", 400, "empty_upload"),
    ],
    ids=["text-named-png", "svg", "not-an-image", "truncated", "bomb", "empty"],
)
async def test_bad_upload_gets_its_specific_error(
    fake_stack: Stack, data: bytes, filename: str, status: int, code: str
) -> None:
    got_status, body = await upload(fake_stack, data, filename)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]


async def test_gif_is_refused_by_content(fake_stack: Stack) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="GIF")
    status, body = await upload(fake_stack, out.getvalue(), "looks-fine.png")
    assert (status, body["error"]["code"]) == (415, "unsupported_image")


async def test_body_over_the_limit_gets_413_before_it_is_read(fake_stack: Stack) -> None:
    big = b"\0" * (50 * 1024 * 1024)
    async with api_session() as session:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(big), filename="big.png")
        try:
            async with session.post(f"{fake_stack.url}/api/uploads", data=form) as r:
                status, body = r.status, await r.json()
        except aiohttp.ClientError:
            pytest.fail("the server should answer 413, not drop the connection")
    assert (status, body["error"]["code"]) == (413, "upload_too_large")


async def test_streamed_body_over_the_limit_gets_413(fake_stack: Stack) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--b--\r\n"

    async with api_session() as session:
        try:
            async with session.post(
                f"{fake_stack.url}/api/uploads",
                data=chunks(),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            ) as r:
                status, body = r.status, await r.json()
        except aiohttp.ClientError:
            pytest.fail("the server should answer 413, not drop the connection")
    assert (status, body["error"]["code"]) == (413, "upload_too_large")


async def test_missing_file_field_is_400(fake_stack: Stack) -> None:
    status, body = await upload(fake_stack, png(), field="image")
    assert (status, body["error"]["code"]) == (400, "missing_file")


async def test_upscale_runs_on_an_upload(fake_stack: Stack) -> None:
    _, uploaded = await upload(fake_stack, png(40, 30))
    async with api_session() as session:
        job = await submit(session, fake_stack.url, "upscale", image=uploaded["id"], scale=2)
        events = await follow(session, fake_stack.url, job["id"])
    (output,) = events[-1]["outputs"]
    assert (events[-1]["type"], output["width"], output["height"]) == ("done", 80, 60)


async def test_unknown_upload_id_is_refused_at_submission(fake_stack: Stack) -> None:
    async with (
        api_session() as session,
        session.post(
            f"{fake_stack.url}/api/jobs",
            json={"workflow": "upscale", "params": {"image": "0" * 32}},
        ) as r,
    ):
        assert r.status == 422
        assert (await r.json())["error"]["code"] == "upload_not_found"


async def test_retention_removes_old_files_and_their_links_answer_410(
    make_stack: StackFactory,
) -> None:
    async with make_stack(inputs_ttl=1, outputs_ttl=1) as stack, api_session() as session:
        _, uploaded = await upload(stack, png(8, 8))
        job = await submit(session, stack.url, "upscale", image=uploaded["id"], scale=1)
        (output,) = (await follow(session, stack.url, job["id"]))[-1]["outputs"]
        await asyncio.sleep(1.1)
        removed = await clean_up(stack.worker.ctx)
        async with session.get(stack.url + output["url"]) as r:
            status, body = r.status, await r.json()
    assert removed["inputs"] == 1 and removed["outputs"] == 1
    assert (status, body["error"]["code"]) == (410, "output_expired")
