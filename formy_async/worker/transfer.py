"""Files between our storage and ComfyUI: inputs uploaded before a prompt, outputs fetched after."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .. import images, media
from ..comfy.client import ComfyClient
from ..comfy.messages import HistoryEntry
from ..models import Job, OutputFile, OutputText
from ..storage import Storage, input_key, output_key
from ..workflows import Workflow


async def upload_inputs(
    comfy: ComfyClient, storage: Storage, workflow: Workflow, job: Job
) -> dict[str, str]:
    """Send each image param's upload to ComfyUI under a name no other job uses; the names."""
    names: dict[str, str] = {}
    for param in workflow.image_params():
        upload_id = job.params.get(param)
        if not upload_id:
            continue
        data = await storage.read(input_key(upload_id))
        probed = await images.probe(data)
        ext = {"jpeg": ".jpg", "webp": ".webp"}.get(probed[0] if probed else "", ".png")
        names[param] = await comfy.upload_image(data, f"formy_{job.id}_{param}{ext}")
    return names


async def collect_outputs(
    comfy: ComfyClient, storage: Storage, entry: HistoryEntry, workflow: Workflow, job: Job
) -> AsyncIterator[OutputFile]:
    """Fetch every file the output nodes produced over /view (ComfyUI's disk may be elsewhere)
    into our storage, one at a time (each is announced as soon as it is stored).

    The output nodes are the manifest's, or every node ComfyUI reported outputs for.
    """
    counts: dict[str, int] = {}
    for ref in entry.files(workflow.manifest.outputs or None):
        data = await comfy.view(ref)
        counts[ref.node_id] = counts.get(ref.node_id, 0) + 1
        ext = media.extension(ref.filename) or ".bin"
        filename = f"{ref.node_id}_{counts[ref.node_id]}{ext}"
        kind = media.kind_of(ref.filename, ref.format)
        content_type = media.content_type_of(filename)
        size = await storage.put(output_key(job.id, filename), data, content_type)
        info = await media.probe(data, kind)
        yield OutputFile(
            filename=filename,
            url=f"/api/jobs/{job.id}/outputs/{filename}",
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
