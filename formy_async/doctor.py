"""`formy-async doctor`: checks a ComfyUI backend step by step (the upscale workflow run, the
catalogue's workflows held against its nodes and models)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from PIL import Image

from .authoring.check import backend_facts, check_files, workflow_files
from .comfy.client import ComfyClient, new_prompt_id
from .errors import FormyError
from .images import probe
from .workflows import Catalogue

SMOKE_WORKFLOW = "upscale"
REQUIRED_NODES = ("LoadImage", "ImageScaleBy", "SaveImage")


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float


class Doctor:
    """Runs the checks in order; the first failure stops the rest (they depend on it)."""

    def __init__(self, comfy: ComfyClient, catalogue: Catalogue) -> None:
        self.comfy = comfy
        self.catalogue = catalogue
        self.steps: list[Step] = []
        self.uploaded = ""
        self.output = b""

    async def run(self, report: Callable[[Step], None]) -> bool:
        checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("reach ComfyUI (/system_stats)", self.reach),
            ("core nodes present (/object_info)", self.nodes),
            ("upload an input (/upload/image)", self.upload),
            ("run the upscale workflow (/prompt + /ws)", self.execute),
            ("fetch and check the output (/view)", self.check_output),
            ("the workflows fit this backend (workflow check)", self.workflows_fit),
        ]
        for name, check in checks:
            started = time.perf_counter()
            try:
                detail, ok = await check(), True
            except (FormyError, aiohttp.ClientError, AssertionError, KeyError, ValueError) as exc:
                detail, ok = str(exc) or type(exc).__name__, False
            step = Step(name, ok, detail, time.perf_counter() - started)
            self.steps.append(step)
            report(step)
            if not ok:
                return False
        return True

    async def reach(self) -> str:
        stats = await self.comfy.system_stats()
        devices = ", ".join(d.get("name", "?") for d in stats.get("devices", [])) or "none"
        info = await self.comfy.info()
        return f"{info.describe()}; devices: {devices}"

    async def nodes(self) -> str:
        missing = []
        for node in REQUIRED_NODES:
            info = await self.comfy.node_info(node)
            if not info:
                missing.append(node)
        if missing:
            raise AssertionError(f"missing node types: {', '.join(missing)}")
        return ", ".join(REQUIRED_NODES)

    async def upload(self) -> str:
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (30, 120, 200)).save(out, format="PNG")
        self.uploaded = await self.comfy.upload_image(
            out.getvalue(), f"formy_doctor_{uuid.uuid4().hex}.png"
        )
        return self.uploaded

    async def execute(self) -> str:
        workflow = self.catalogue.get_or_raise(SMOKE_WORKFLOW)
        params = workflow.resolve({"image": "0" * 32, "scale": 2})
        graph = workflow.render(
            params, output_prefix="formy_doctor/check", inputs={"image": self.uploaded}
        )
        prompt_id = new_prompt_id()
        messages = 0
        async for _ in self.comfy.run(graph, prompt_id):
            messages += 1
        entry = await self.comfy.result(prompt_id)
        files = entry.files(workflow.manifest.outputs)
        if not files:
            raise AssertionError("the prompt finished without an output image")
        self.output = await self.comfy.view(files[0])
        return f"prompt {prompt_id} done; {messages} messages on the socket"

    async def check_output(self) -> str:
        probed = await probe(self.output)
        if probed is None or probed[1:] != (128, 96):
            raise AssertionError(f"expected a 128×96 image, got {probed}")
        return f"{probed[0].upper()} {probed[1]}×{probed[2]}, {len(self.output)} bytes"

    async def workflows_fit(self) -> str:
        files = [workflow_files(workflow) for workflow in self.catalogue.values()]
        facts = await backend_facts(self.comfy, files)
        problems = [
            p.model_copy(update={"backend": None}) for f in files for p in check_files(f, facts)
        ]
        if problems:
            shown = "; ".join(str(p) for p in problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise AssertionError(
                f"{len(problems)} problem(s), `formy-async workflow check` shows each with its "
                f"line: {shown}{more}"
            )
        return f"{len(files)} workflows: their node classes, inputs, ranges and models are here"


async def run_doctor(
    comfyui_url: str, catalogue: Catalogue, report: Callable[[Step], None]
) -> bool:
    async with aiohttp.ClientSession() as session:
        comfy = ComfyClient(comfyui_url, session, request_timeout=30, idle_check=5)
        return await Doctor(comfy, catalogue).run(report)
