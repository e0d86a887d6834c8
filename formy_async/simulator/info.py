"""What the server says about itself, per profile: GET /system_stats and its feature flags."""

from __future__ import annotations

import os
import sys

from aiohttp import web

from .config import SimulatorConfig
from .nodes import JsonDict
from .state import SIMULATOR

# Pinned comfy* packages of a current requirements.txt, as comfy_package_versions lists them.
_NEW_PACKAGES = (
    ("comfyui-frontend-package", "1.53.6"),
    ("comfyui-workflow-templates", "0.11.73"),
    ("comfyui-embedded-docs", "0.5.12"),
    ("comfy-kitchen", "0.2.36"),
    ("comfy-aimdo", "0.5.5"),
)
_OLD_FRONTEND, _OLD_TEMPLATES = "1.27.10", "0.1.94"


def server_features(config: SimulatorConfig) -> JsonDict:
    """GET /features and the WebSocket feature_flags reply (comfy_api/feature_flags.py)."""
    if not config.is_new_profile:
        return {"supports_preview_metadata": True, "max_upload_size": config.max_upload_size}
    return {
        "supports_preview_metadata": True,
        "supports_model_type_tags": True,
        "max_upload_size": config.max_upload_size,
        "extension": {"manager": {"supports_v4": True}},
        "node_replacements": True,
        "assets": False,  # opt-in on a stock server; the simulator has no asset database
    }


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 16 * 1024**3, 8 * 1024**3


def _cpu_device(total: int, free: int) -> JsonDict:
    return {
        "name": "cpu",
        "type": "cpu",
        "index": None,
        "vram_total": total,
        "vram_free": free,
        "torch_vram_total": total,
        "torch_vram_free": free,
    }


def _old_system(config: SimulatorConfig, total: int, free: int) -> JsonDict:
    return {
        "os": os.name,
        "ram_total": total,
        "ram_free": free,
        "comfyui_version": config.comfyui_version,
        "required_frontend_version": _OLD_FRONTEND,
        "installed_templates_version": _OLD_TEMPLATES,
        "required_templates_version": _OLD_TEMPLATES,
        "python_version": sys.version,
        "pytorch_version": "2.8.0+cpu",
        "embedded_python": False,
        "argv": ["main.py", "--cpu"],
    }


def _new_system(config: SimulatorConfig, total: int, free: int) -> JsonDict:
    versions = dict(_NEW_PACKAGES)
    packages = [
        {"name": name, "installed": pinned, "required": pinned} for name, pinned in _NEW_PACKAGES
    ]
    return {
        "os": sys.platform,  # was os.name ("posix") before the current line
        "ram_total": total,
        "ram_free": free,
        "comfyui_version": config.comfyui_version,
        "required_frontend_version": versions["comfyui-frontend-package"],
        "installed_templates_version": versions["comfyui-workflow-templates"],
        "required_templates_version": versions["comfyui-workflow-templates"],
        "comfy_package_versions": packages,
        "python_version": sys.version,
        "pytorch_version": "2.10.0+cpu",
        "embedded_python": False,
        "deploy_environment": "local-git",  # comfy/deploy_environment.py's default
        "argv": ["main.py", "--cpu"],
    }


async def system_stats(request: web.Request) -> web.Response:
    config = request.app[SIMULATOR].config
    total, free = _memory()
    build = _new_system if config.is_new_profile else _old_system
    # On a CPU-only machine the device list is the primary device alone, in both lines.
    return web.json_response(
        {"system": build(config, total, free), "devices": [_cpu_device(total, free)]}
    )


async def features(request: web.Request) -> web.Response:
    return web.json_response(server_features(request.app[SIMULATOR].config))
