"""A prompt's messages go to whichever socket has its client id now, as in ComfyUI's server.py."""

from __future__ import annotations

import aiohttp
import pytest

from formy_async.simulator import SIMULATOR, SimulatorConfig, create_app, serve_app

from .support import PROFILES, submit
from .test_execution import image_graph, next_of_type, until_done


@pytest.mark.parametrize("version", PROFILES)
async def test_a_new_socket_of_the_same_client_id_gets_the_prompts_later_messages(
    http: aiohttp.ClientSession, version: str
) -> None:
    app = create_app(SimulatorConfig(comfyui_version=version, step_delay=0))
    async with serve_app(app) as url:
        async with http.ws_connect(f"{url}/ws?clientId=c1") as first:
            prompt_id = await submit(http, url, image_graph(steps=30, delay=0.02), client_id="c1")
            await next_of_type(first, "progress")
        # the first socket is closed: a later one of the same id is the prompt's target now
        async with http.ws_connect(f"{url}/ws?clientId=c1") as second:
            frames = await until_done(second, prompt_id)
    progress = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
    assert progress and {p["prompt_id"] for p in progress} == {prompt_id}
    assert frames[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    assert app[SIMULATOR].queue.submitted == [prompt_id]
