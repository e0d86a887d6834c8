"""A faithful fake of a stock ComfyUI HTTP + WebSocket server (0.3.64 or 0.25+), without a GPU."""

from __future__ import annotations

from .app import create_app, run_simulator, serve
from .config import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app", "run_simulator", "serve"]
