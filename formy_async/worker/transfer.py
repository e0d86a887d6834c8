"""Files between our storage and ComfyUI: inputs uploaded before a prompt, outputs fetched after."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

from .. import images, media
from ..asset_refs import asset_ids
from ..comfy.client import ComfyClient
from ..comfy.messages import Executed, FileRef, HistoryEntry
from ..errors import ComfyUnavailable, MissingAsset
from ..models import Asset, Job, OutputFile, OutputText
from ..storage import Storage, asset_key, input_key, output_key
from ..store.assets import AssetStore
from ..workflows import Workflow


async def upload_inputs(
    comfy: ComfyClient, storage: Storage, workflow: Workflow, job: Job
) -> dict[str, str]:
    """Send each image param's upload to ComfyUI; the names its LoadImage nodes take.

    A file is named by its content, so that bytes ComfyUI already holds (the same photo in many
    jobs, a retried job) are not sent again: a HEAD request finds them.
    """
    names: dict[str, str] = {}
    for param in workflow.image_params():
        upload_id = job.params.get(param)
        if not upload_id:
            continue
        data = await storage.read(input_key(upload_id))
        probed = await images.probe(data)
        ext = {"jpeg": ".jpg", "webp": ".webp"}.get(probed[0] if probed else "", ".png")
        name = f"formy_{hashlib.sha256(data).hexdigest()[:40]}{ext}"
        names[param] = name if await comfy.has_input(name) else await comfy.upload_image(data, name)
    return names


async def upload_assets(
    comfy: ComfyClient, storage: Storage, assets: AssetStore, job: Job
) -> dict[str, str]:
    """Send each asset a graph's `core/ASSET` references name to ComfyUI; the file name each
    has there, by asset id. Named by content, as inputs are, so that held bytes are not resent;
    an asset gone meanwhile (its retention passed) fails the job, saying which."""
    names: dict[str, str] = {}
    for asset_id in asset_ids(job.graph or {}):
        asset = await assets.get(asset_id)
        if asset is None or asset.user != job.user:
            raise MissingAsset(f"asset {asset_id!r} is gone (its retention time passed)")
        name = f"formy_{asset.hex[:40]}{_extension(asset)}"
        if not await comfy.has_input(name):
            name = await comfy.upload_image(await storage.read(asset_key(asset.hex)), name)
        names[asset_id] = name
    return names


_PLAIN_EXTENSION = re.compile(r"^\.[a-z0-9]{1,8}$")


def _extension(asset: Asset) -> str:
    """The extension ComfyUI's loaders go by: the uploaded name's, else the content type's."""
    ext = media.extension(asset.file_path or "")
    return ext if _PLAIN_EXTENSION.match(ext) else media.extension_of_type(asset.content_type)


#: outputs fetched from ComfyUI at once (a video job may list dozens of files)
FETCHES = 4

_Where = tuple[str, str, str]


def _where(ref: FileRef) -> _Where:
    return ref.filename, ref.subfolder, ref.type


class Prefetch:
    """Output files fetched from ComfyUI as soon as their node reports them (`executed`),
    while the prompt runs on and its history is read; what history then lists is taken from
    here, and fetched only if it is not here (a cached node reports nothing)."""

    def __init__(self, comfy: ComfyClient, workflow: Workflow) -> None:
        self.comfy = comfy
        self.nodes = workflow.manifest.outputs or None
        self.gate = asyncio.Semaphore(FETCHES)
        self._fetches: dict[_Where, asyncio.Task[bytes]] = {}

    def executed(self, message: Executed) -> None:
        if self.nodes is not None and message.node not in self.nodes:
            return
        for ref in HistoryEntry(outputs={message.node: message.output}).files():
            if ref.type == "output" and _where(ref) not in self._fetches:
                self._fetches[_where(ref)] = asyncio.ensure_future(self._view(ref))

    async def _view(self, ref: FileRef) -> bytes:
        async with self.gate:
            return await self.comfy.view(ref)

    async def take(self, ref: FileRef) -> bytes:
        """The file's bytes: fetched already, or now."""
        fetching = self._fetches.pop(_where(ref), None)
        if fetching is None:
            return await self._view(ref)
        try:
            return await fetching
        except ComfyUnavailable:  # fetched too early, or a hiccup: once more, from history's
            return await self._view(ref)

    async def aclose(self) -> None:
        """Drop what history did not list (and whatever is still on its way)."""
        for fetching in self._fetches.values():
            fetching.cancel()
        await asyncio.gather(*self._fetches.values(), return_exceptions=True)
        self._fetches.clear()


async def collect_outputs(
    prefetch: Prefetch, storage: Storage, entry: HistoryEntry, workflow: Workflow, job: Job
) -> AsyncIterator[OutputFile]:
    """Every file the output nodes produced, fetched over /view (ComfyUI's disk may be
    elsewhere; `prefetch` may hold it already) into our storage, a few at once, yielded in
    order as each is stored.

    The output nodes are the manifest's, or every node ComfyUI reported outputs for.
    """
    counts: dict[str, int] = {}
    gate = asyncio.Semaphore(FETCHES)

    async def fetch(ref: FileRef, filename: str) -> OutputFile:
        async with gate:
            return await _store_output(prefetch, storage, ref, job.id, filename)

    fetches = []
    for ref in entry.files(workflow.manifest.outputs or None):
        counts[ref.node_id] = counts.get(ref.node_id, 0) + 1
        filename = f"{ref.node_id}_{counts[ref.node_id]}{media.extension(ref.filename) or '.bin'}"
        fetches.append(asyncio.ensure_future(fetch(ref, filename)))
    try:
        for fetching in fetches:
            yield await fetching
    finally:
        for fetching in fetches:
            fetching.cancel()
        # only those still running are waited for: a wait costs a turn of the event loop, and
        # the caller's next write would go to Redis alone
        running = [fetching for fetching in fetches if not fetching.done()]
        for ended in fetches:
            if ended.done() and not ended.cancelled():
                ended.exception()  # seen, whether or not it was awaited above
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def _store_output(
    prefetch: Prefetch, storage: Storage, ref: FileRef, job_id: str, filename: str
) -> OutputFile:
    data = await prefetch.take(ref)
    kind = media.kind_of(ref.filename, ref.format)
    content_type = media.content_type_of(filename)
    size, info = await asyncio.gather(  # stored and probed at once: neither needs the other
        storage.put(output_key(job_id, filename), data, content_type), media.probe(data, kind)
    )
    return OutputFile(
        filename=filename,
        url=f"/api/jobs/{job_id}/outputs/{filename}",
        kind=kind,
        content_type=content_type,
        width=info.width,
        height=info.height,
        duration=info.duration,
        animated=info.animated or (ref.animated and kind == "image"),
        size=size,
        node_id=ref.node_id,
    )


def collect_texts(entry: HistoryEntry, workflow: Workflow) -> list[OutputText]:
    """The text the output nodes produced (PreviewAny and the like)."""
    return [
        OutputText(node_id=node_id, text=text)
        for node_id, text in entry.texts(workflow.manifest.outputs or None)
    ]
