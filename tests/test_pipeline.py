"""The whole pipeline on the real Redis: HTTP → arq worker → ComfyUI (simulator) → WebSocket."""

from __future__ import annotations

import asyncio
import io

import av
import pytest
from PIL import Image

from formy_async.embedded import Stack

from .conftest import EVERY_COMFYUI
from .helpers import api_session, follow, get_json, submit, upload_image

pytestmark = [pytest.mark.redis, EVERY_COMFYUI]


async def test_events_arrive_in_order_without_gaps_and_end_done(stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(
            session, stack.url, prompt="a red fox in the snow", steps=6, width=256, height=192
        )
        events = await follow(session, stack.url, job["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events[:2]] == ["submitted", "started"]
    assert events[-1]["type"] == "done"
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert progress[-1] == 100 and 100 not in progress[:-1]
    steps = [e for e in events if e["type"] == "progress" and e["node_type"] == "KSampler"]
    assert [e["value"] for e in steps if e["max"] == 6] == [1, 2, 3, 4, 5, 6]


async def test_outputs_download_as_pngs_of_the_requested_size(stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(
            session, stack.url, prompt="two foxes", steps=2, width=320, height=256, batch_size=2
        )
        events = await follow(session, stack.url, job["id"])
        outputs = events[-1]["outputs"]
        assert len(outputs) == 2
        for output in outputs:
            async with session.get(stack.url + output["url"]) as r:
                assert r.status == 200
                assert r.content_type == "image/png"
                data = await r.read()
            image = Image.open(io.BytesIO(data))
            assert (image.format, image.size) == ("PNG", (320, 256))
            assert (output["width"], output["height"], output["size"]) == (320, 256, len(data))


async def test_job_record_shows_the_final_state_and_params(stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=2, width=64, height=64)
        await follow(session, stack.url, job["id"])
        status, record = await get_json(session, f"{stack.url}/api/jobs/{job['id']}")
    assert status == 200
    assert (record["status"], record["progress"]) == ("done", 100)
    assert isinstance(record["params"]["seed"], int)
    assert record["started_at"] <= record["finished_at"]
    assert len(record["outputs"]) == 1


async def test_late_subscriber_receives_the_whole_history(stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, stack.url, prompt="late", steps=3, width=64, height=64)
        live = await follow(session, stack.url, job["id"])
        replayed = await follow(session, stack.url, job["id"])
        tail = await follow(session, stack.url, job["id"], after=3)
    assert replayed == live
    assert tail == live[3:]


async def test_fifty_concurrent_jobs_all_finish_with_their_own_events(stack: Stack) -> None:
    async with api_session() as session:
        jobs = await asyncio.gather(
            *(
                submit(session, stack.url, prompt=f"fox {i}", steps=3, width=64, height=64)
                for i in range(50)
            )
        )
        streams = await asyncio.gather(
            *(follow(session, stack.url, job["id"], timeout=60) for job in jobs)
        )
    for job, events in zip(jobs, streams, strict=True):
        assert {e["job_id"] for e in events} == {job["id"]}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "done"


async def test_the_video_workflow_makes_an_mp4_and_an_animated_webp(stack: Stack) -> None:
    async with api_session() as session:
        image = await upload_image(session, stack.url, Image.new("RGB", (97, 61), "red"))
        job = await submit(session, stack.url, "image_to_video", image=image, frames=6, size=128)
        events = await follow(session, stack.url, job["id"])
        assert events[-1]["type"] == "done", events[-1]
        video, animation = events[-1]["outputs"]
        async with session.get(stack.url + video["url"]) as r:
            assert (r.status, r.content_type) == (200, "video/mp4")
            clip = await r.read()
        async with session.get(stack.url + animation["url"]) as r:
            assert (r.status, r.content_type) == (200, "image/webp")
    assert (video["kind"], video["width"], video["height"]) == ("video", 128, 128)
    assert video["duration"] == pytest.approx(0.5, abs=0.1)  # 6 frames at 12 a second
    assert (animation["kind"], animation["animated"]) == ("image", True)
    with av.open(io.BytesIO(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


async def test_a_video_answers_a_byte_range_with_206(stack: Stack) -> None:
    async with api_session() as session:
        image = await upload_image(session, stack.url, Image.new("RGB", (64, 64), "red"))
        job = await submit(session, stack.url, "image_to_video", image=image, frames=4, size=128)
        events = await follow(session, stack.url, job["id"])
        video = events[-1]["outputs"][0]
        async with session.get(stack.url + video["url"], headers={"Range": "bytes=0-99"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 0-99/{video['size']}"
            assert len(await r.read()) == 100
