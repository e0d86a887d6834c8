"""Newer ComfyUI's job view (comfy_execution/jobs.py): one shape for queued and finished prompts."""

from __future__ import annotations

import uuid
from typing import Any

from .nodes import JsonDict

PENDING, IN_PROGRESS = "pending", "in_progress"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
JOB_STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
FINISHED_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED})
PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio", "3d", "text"})
THREE_D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_EXTENSIONS = (".txt", ".md", ".json")
TEXT_PREVIEW_LIMIT = 1024
_ENDINGS = ("execution_success", "execution_error", "execution_interrupted")


def is_canonical_uuid(value: Any) -> bool:
    """What validate_job_id accepts: exactly the text str(uuid.uuid4()) prints."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _pruned(fields: JsonDict) -> JsonDict:
    return {key: value for key, value in fields.items() if value is not None}


def _metadata(extra_data: JsonDict) -> tuple[Any, Any]:
    """(create_time, workflow_id): the id is the UI workflow's, carried in extra_pnginfo."""
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow") or {}
    return extra_data.get("create_time"), workflow.get("id")


def job_from_queue_item(item: list[Any], status: str, with_workflow: bool = False) -> JsonDict:
    """A pending or running job: no outputs yet; the workflow only where the release adds it."""
    number, prompt_id, prompt, extra_data, _ = item
    create_time, workflow_id = _metadata(extra_data)
    job = _pruned(
        {
            "id": prompt_id,
            "status": status,
            "priority": number,
            "create_time": create_time,
            "outputs_count": 0,
            "previewable_outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )
    if with_workflow:
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _outcome(status_info: JsonDict | None) -> tuple[str, Any, Any, Any]:
    """(status, start, end, error) read from history's status messages."""
    start = end = error = None
    interrupted = False
    for entry in (status_info or {}).get("messages", []):
        if not (isinstance(entry, list | tuple) and len(entry) >= 2 and isinstance(entry[1], dict)):
            continue
        event, data = entry[0], entry[1]
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in _ENDINGS:
            end = data.get("timestamp")
            error = data if event == "execution_error" else error
            interrupted = interrupted or event == "execution_interrupted"
    status_str = (status_info or {}).get("status_str")
    if status_str == "error":
        return (CANCELLED if interrupted else FAILED), start, end, error
    return COMPLETED, start, end, error


def job_from_history(prompt_id: str, entry: JsonDict, with_outputs: bool) -> JsonDict:
    number, _, prompt, extra_data, _ = entry["prompt"]
    create_time, workflow_id = _metadata(extra_data)
    status_info = entry.get("status")
    status, start, end, error = _outcome(status_info)
    outputs = entry.get("outputs", {})
    count, preview = outputs_summary(outputs)
    job = _pruned(
        {
            "id": prompt_id,
            "status": status,
            "priority": number,
            "create_time": create_time,
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": count,
            "previewable_outputs_count": count_previewable(outputs),
            "preview_output": preview,
            "workflow_id": workflow_id,
        }
    )
    if with_outputs:
        job["outputs"] = normalize_outputs(outputs)
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def _three_d_file(item: Any) -> JsonDict | None:
    """Some 3D nodes report a bare filename string; the jobs API turns it into a file item."""
    if isinstance(item, str) and item.lower().endswith(THREE_D_EXTENSIONS):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def _media_items(outputs: JsonDict) -> list[tuple[str, str, list[Any]]]:
    """(node_id, media key, items) for every list-valued key; "animated" is a flag, not media."""
    found = []
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media_type, items in node_outputs.items():
            if media_type != "animated" and isinstance(items, list):
                found.append((node_id, media_type, items))
    return found


def is_previewable(media_type: str, item: JsonDict) -> bool:
    if media_type in PREVIEWABLE_MEDIA:
        return True
    if str(item.get("format", "")).startswith(("video/", "audio/")):
        return True
    return str(item.get("filename", "")).lower().endswith(THREE_D_EXTENSIONS + TEXT_EXTENSIONS)


def _is_text(media_type: str, item: JsonDict) -> bool:
    return media_type == "text" or str(item.get("filename", "")).lower().endswith(TEXT_EXTENSIONS)


def _text_preview(node_id: str, value: Any) -> JsonDict:
    text = str(value)
    cut = {"truncated": True} if len(text) > TEXT_PREVIEW_LIMIT else {}
    return {"content": text[:TEXT_PREVIEW_LIMIT], **cut, "nodeId": node_id, "mediaType": "text"}


def outputs_summary(outputs: JsonDict) -> tuple[int, JsonDict | None]:
    """How many file outputs, and the one to preview: a saved visual file first, then any
    visual file, then a saved text file, then raw text (which is shown but never counted)."""
    count = 0
    saved = other = text_file = text = None
    for node_id, media_type, items in _media_items(outputs):
        for raw in items:
            item = raw if isinstance(raw, dict) else _three_d_file(raw)
            if item is None:
                if media_type == "text" and text is None:
                    text = _text_preview(node_id, raw)
                continue
            count += 1
            if saved is not None or not is_previewable(media_type, item):
                continue
            enriched = {**item, "nodeId": node_id}
            enriched.setdefault("mediaType", media_type)
            if _is_text(media_type, item):
                text_file = text_file or enriched
            elif item.get("type") == "output":
                saved = enriched
            else:
                other = other or enriched
    return count, saved or other or text_file or text


def count_previewable(outputs: JsonDict) -> int:
    count = 0
    for _, media_type, items in _media_items(outputs):
        for raw in items:
            item = raw if isinstance(raw, dict) else _three_d_file(raw)
            count += item is not None and is_previewable(media_type, item)
    return count


def normalize_outputs(outputs: JsonDict) -> JsonDict:
    """History outputs for a job: 3D filename strings become items, None items go."""
    normalized: JsonDict = {}
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            normalized[node_id] = node_outputs
            continue
        normalized[node_id] = {
            key: [_three_d_file(i) or i for i in items if i is not None]
            if key != "animated" and isinstance(items, list)
            else items
            for key, items in node_outputs.items()
        }
    return normalized


def sort_jobs(jobs: list[JsonDict], sort_by: str, descending: bool) -> list[JsonDict]:
    def duration(job: JsonDict) -> Any:
        start, end = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
        return end - start if end and start else 0

    def created(job: JsonDict) -> Any:
        return job.get("create_time", 0)

    key = duration if sort_by == "execution_duration" else created
    return sorted(jobs, key=key, reverse=descending)
