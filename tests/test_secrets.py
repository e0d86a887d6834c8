"""A ComfyUI URL's credentials are never shown: not to users, webhooks, admins or the logs."""

from __future__ import annotations

import json

import pytest
import structlog

from .conftest import ADMIN_TOKEN, StackFactory, free_port
from .helpers import api_session, follow, get_json, submit, wait_until

pytestmark = pytest.mark.redis

SECRET = "hunter2-secret"


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://operator:{SECRET}@", 1)


async def test_a_job_and_the_admin_views_never_show_the_backends_credentials(
    make_stack: StackFactory, simulator_url: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with make_stack(comfyui_url=with_credentials(simulator_url)) as stack:
            async with api_session() as session:
                job = await submit(session, stack.url, prompt="a fox", steps=1)
                events = await follow(session, stack.url, job["id"])
                _, owner_view = await get_json(session, f"{stack.url}/api/jobs/{job['id']}")
                _, listing = await get_json(session, f"{stack.url}/api/jobs")
            async with api_session(ADMIN_TOKEN) as admin:
                _, admin_view = await get_json(admin, f"{stack.url}/api/jobs/{job['id']}")
                _, stats = await get_json(admin, f"{stack.url}/api/stats")
                _, backends = await get_json(admin, f"{stack.url}/api/backends")
    assert events[-1]["type"] == "done"
    assert "backend" not in owner_view
    assert admin_view["backend"] == simulator_url.rstrip("/")
    seen = json.dumps([events, owner_view, listing, admin_view, stats, backends])
    assert SECRET not in seen
    assert SECRET not in repr(logs)


async def test_a_backend_that_is_down_is_named_without_its_credentials(
    make_stack: StackFactory,
) -> None:
    dead = with_credentials(f"http://127.0.0.1:{free_port()}")
    with structlog.testing.capture_logs() as logs:
        async with (
            make_stack(comfyui_url=dead, job_max_attempts=1, pool_probe_interval=0.1) as stack,
            api_session(ADMIN_TOKEN) as admin,
        ):

            async def marked_down() -> bool:
                _, found = await get_json(admin, f"{stack.url}/api/backends")
                return bool(found["backends"][0]["last_error"])

            await wait_until(marked_down)
            _, backends = await get_json(admin, f"{stack.url}/api/backends")
    assert "cannot connect" in backends["backends"][0]["last_error"]
    assert SECRET not in json.dumps(backends)
    assert SECRET not in repr(logs)
