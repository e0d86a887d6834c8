"""Files between our storage and ComfyUI: inputs uploaded before a prompt, outputs fetched after."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator

from .. import images
from ..comfy.client import ComfyClient
from ..comfy.messages import HistoryEntry
from ..models import Job, OutputFile
from ..storage import Storage, content_type_of, input_key, output_key
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
    """Fetch every output over /view (ComfyUI's disk may be elsewhere) into our storage, one
    at a time (each is announced as soon as it is stored)."""
    counts: dict[str, int] = {}
    for node_id, ref in entry.images(workflow.manifest.outputs):
        data = await comfy.view(ref)
        counts[node_id] = counts.get(node_id, 0) + 1
        ext = posixpath.splitext(ref.filename)[1].lower() or ".png"
        filename = f"{node_id}_{counts[node_id]}{ext}"
        content_type = content_type_of(filename)
        size = await storage.put(output_key(job.id, filename), data, content_type)
        probed = await images.probe(data)
        yield OutputFile(
            filename=filename,
            url=f"/api/jobs/{job.id}/outputs/{filename}",
            content_type=content_type,
            width=probed[1] if probed else None,
            height=probed[2] if probed else None,
            size=size,
            node_id=node_id,
        )
