"""HTTP handlers for ComfyUI's API: prompts, queue, history, object_info, uploads, /view, models."""

from __future__ import annotations

import asyncio
import copy
import io
import mimetypes
import os
import posixpath
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web
from PIL import Image

from . import info
from .engine import SENSITIVE_EXTRA_DATA_KEYS
from .files import DIR_TYPES, Dirs, inside, store_upload
from .jobs import is_canonical_uuid
from .profile import Profile
from .prompt_queue import QueueItem
from .routes_jobs import JOB_ROUTES
from .state import SIMULATOR, Simulator
from .validation import validate_prompt

log = structlog.get_logger()

MODEL_FOLDERS = {
    "checkpoints": "checkpoints",
    "configs": None,
    "loras": "loras",
    "vae": "vaes",
    "text_encoders": None,
    "diffusion_models": "diffusion_models",
    "clip_vision": None,
    "style_models": None,
    "embeddings": None,
    "diffusers": None,
    "vae_approx": None,
    "controlnet": "controlnet",
    "gligen": None,
    "upscale_models": None,
    "custom_nodes": None,
    "hypernetworks": None,
    "photomaker": None,
    "classifiers": None,
    "model_patches": None,
    "audio_encoders": None,
}
_FORCE_DOWNLOAD = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}


def _sim(request: web.Request) -> Simulator:
    return request.app[SIMULATOR]


async def object_info(request: web.Request) -> web.Response:
    sim = _sim(request)
    infos = await asyncio.to_thread(
        lambda: {name: node.info(sim.env) for name, node in sim.registry.items()}
    )
    return web.json_response(infos)


async def object_info_one(request: web.Request) -> web.Response:
    sim = _sim(request)
    node = sim.registry.get(request.match_info["node_class"])
    if node is None:
        return web.json_response({})
    return web.json_response({node.name: await asyncio.to_thread(node.info, sim.env)})


def _bad_prompt_id() -> web.Response:
    error = {
        "type": "invalid_prompt_id",
        "message": "prompt_id must be a valid UUID",
        "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
        "omit it to let the server generate one",
        "extra_info": {},
    }
    return web.json_response({"error": error, "node_errors": {}}, status=400)


def _prompt_id(body: dict[str, Any], profile: Profile) -> str | None:
    """The id to queue under: minted when absent; None when the profile refuses the client's."""
    if not profile.validates_prompt_ids:
        return str(body.get("prompt_id", uuid.uuid4()))  # 0.3.64: str() of anything, even null
    given = body.get("prompt_id")
    if given is None:
        return str(uuid.uuid4())
    return given if is_canonical_uuid(given) else None


def _extra_data(request: web.Request, body: dict[str, Any], profile: Profile) -> dict[str, Any]:
    extra_data: dict[str, Any] = copy.deepcopy(body.get("extra_data", {}))
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    # Newer ComfyUI also records which product submitted the prompt, if the header says.
    usage_source = request.headers.get("Comfy-Usage-Source")
    if profile.new and usage_source and "comfy_usage_source" not in extra_data:
        extra_data["comfy_usage_source"] = usage_source
    return extra_data


def _queued_extra_data(extra_data: dict[str, Any], profile: Profile) -> dict[str, Any]:
    if profile.strips_sensitive_on_submit:
        # Held apart for API nodes and never shown; 0.3.64 leaves them visible in /queue.
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
    if profile.stamps_create_time:
        extra_data["create_time"] = int(time.time() * 1000)
    return extra_data


async def post_prompt(request: web.Request) -> web.Response:
    sim = _sim(request)
    profile = sim.config.profile
    body = await request.json()
    number = sim.queue.next_number(body.get("number"), body.get("front"))
    if "prompt" not in body:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    prompt_id = _prompt_id(body, profile)
    if prompt_id is None:
        return _bad_prompt_id()
    prompt = copy.deepcopy(body["prompt"])
    partial = body.get("partial_execution_targets")
    verdict = await asyncio.to_thread(validate_prompt, prompt, sim.registry, sim.env, partial)
    extra_data = _extra_data(request, body, profile)
    if verdict.error is not None:
        log.warning("prompt_invalid", error_type=verdict.error["type"])
        return web.json_response(
            {"error": verdict.error, "node_errors": verdict.node_errors}, status=400
        )
    extra_data = _queued_extra_data(extra_data, profile)
    sim.queue.put(QueueItem(number, prompt_id, prompt, extra_data, verdict.outputs))
    log.info("prompt_queued", prompt_id=prompt_id, number=number)
    return web.json_response(
        {"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors}
    )


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).hub.queue_info())


async def get_queue(request: web.Request) -> web.Response:
    queue = _sim(request).queue
    return web.json_response(
        {"queue_running": queue.running_items(), "queue_pending": queue.pending()}
    )


async def post_queue(request: web.Request) -> web.Response:
    queue = _sim(request).queue
    body = await request.json()
    if body.get("clear"):
        queue.wipe()
    for prompt_id in body.get("delete", []) if "delete" in body else []:
        queue.delete(prompt_id)
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    sim = _sim(request)
    try:
        body = await request.json()
    except ValueError:
        body = {}
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    running = sim.queue.running
    if prompt_id is None or (running is not None and running.prompt_id == prompt_id):
        sim.engine.interrupt()
    else:
        log.info("interrupt_skipped_not_running", prompt_id=prompt_id)
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    body = await request.json()
    _sim(request).engine.free(
        bool(body.get("unload_models", False)), bool(body.get("free_memory", False))
    )
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    query = request.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query.get("offset", -1))
    return web.json_response(_sim(request).queue.get_history(max_items, offset))


async def get_history_one(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).queue.history_entry(request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    queue = _sim(request).queue
    body = await request.json()
    if body.get("clear"):
        queue.history.clear()
    for prompt_id in body.get("delete", []) if "delete" in body else []:
        queue.delete_history(prompt_id)
    return web.Response(status=200)


async def upload_image(request: web.Request) -> web.Response:
    sim = _sim(request)
    post = await request.post()
    image = post.get("image")
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    dir_type = str(post.get("type") or "input")
    base = sim.dirs.by_type(dir_type)  # an unknown type crashes into a 500, as in ComfyUI
    subfolder = str(post.get("subfolder", ""))
    folder = base / posixpath.normpath(subfolder)
    if not inside(base, folder / image.filename):
        return web.Response(status=400)
    overwrite = str(post.get("overwrite")) in ("true", "1")
    data = await asyncio.to_thread(image.file.read)
    name = await asyncio.to_thread(store_upload, folder, image.filename, data, overwrite)
    log.info("image_uploaded", name=name, subfolder=subfolder, type=dir_type)
    return web.json_response({"name": name, "subfolder": subfolder, "type": dir_type})


async def view(request: web.Request) -> web.StreamResponse:
    query = request.query
    status, path = await asyncio.to_thread(_locate, _sim(request).dirs, query)
    if status != 200:
        return web.Response(status=status)
    filename = os.path.basename(path)
    disposition = {"Content-Disposition": f'filename="{filename}"'}
    if "preview" in query or query.get("channel", "rgba") in ("rgb", "a"):
        body, content_type = await asyncio.to_thread(_transcode, path, query)
        return web.Response(body=body, content_type=content_type, headers=disposition)
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if content_type in _FORCE_DOWNLOAD:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={**disposition, "Content-Type": content_type})


def _locate(dirs: Dirs, query: Mapping[str, str]) -> tuple[int, str]:
    """/view's path rules: (200, path) or the error status ComfyUI answers with."""
    if "filename" not in query:
        return 404, ""
    filename, base = dirs.split_annotation(query["filename"])
    if not filename or filename[0] == "/" or ".." in filename:
        return 400, ""
    if base is None:
        dir_type = query.get("type", "output")
        if dir_type not in DIR_TYPES:
            return 400, ""
        base = dirs.by_type(dir_type)
    folder = str(base)
    if "subfolder" in query:
        folder = os.path.join(base, query["subfolder"])
        if not inside(base, folder):
            return 403, ""
    path = os.path.join(folder, os.path.basename(filename))
    return (200, path) if os.path.isfile(path) else (404, "")


def _transcode(path: str, query: Any) -> tuple[bytes, str]:
    """/view's preview= and channel= options: re-encode the file in memory."""
    buffer = io.BytesIO()
    channel = query.get("channel", "")
    with Image.open(path) as img:
        if "preview" in query:
            parts = query["preview"].split(";")
            image_format = parts[0] if parts[0] in ("webp", "jpeg") else "webp"
            if "a" in channel:
                image_format = "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            picture = img.convert("RGB") if image_format == "jpeg" or channel == "rgb" else img
            picture.save(buffer, format=image_format, quality=quality)
            return buffer.getvalue(), f"image/{image_format}"
        if channel == "rgb":
            img.convert("RGB").save(buffer, format="PNG")
        else:
            alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
            out = Image.new("RGBA", img.size)
            out.putalpha(alpha)
            out.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


async def models(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


async def models_in_folder(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        return web.Response(status=404)
    field = MODEL_FOLDERS[folder]
    config = _sim(request).config
    names: list[str] = list(getattr(config, field)) if field else []
    return web.json_response(sorted(names))


async def embeddings(request: web.Request) -> web.Response:
    return web.json_response([])


async def extensions(request: web.Request) -> web.Response:
    return web.json_response([])


async def websocket(request: web.Request) -> web.StreamResponse:
    return await _sim(request).hub.handle(request)


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/ws", websocket),
    ("GET", "/system_stats", info.system_stats),
    ("GET", "/features", info.features),
    ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_one),
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_one),
    ("POST", "/history", post_history),
    ("POST", "/upload/image", upload_image),
    ("GET", "/view", view),
    ("GET", "/models", models),
    ("GET", "/models/{folder}", models_in_folder),
    ("GET", "/embeddings", embeddings),
    ("GET", "/extensions", extensions),
)


def add_routes(app: web.Application) -> None:
    """Register every route twice, as is and under /api, like ComfyUI (the jobs routes, which
    newer ComfyUI declares with /api already, thus also answer under /api/api)."""
    routes = ROUTES + (JOB_ROUTES if app[SIMULATOR].config.profile.has_jobs_api else ())
    for prefix in ("", "/api"):
        for method, path, handler in routes:
            if method == "GET":  # answers HEAD too, as ComfyUI's GET routes do
                app.router.add_get(prefix + path, handler)
            else:
                app.router.add_route(method, prefix + path, handler)
