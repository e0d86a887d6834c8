"""A faithful fake of a stock ComfyUI HTTP + WebSocket server (0.3.64 or 0.25+), without a GPU."""

from __future__ import annotations

from .app import create_app, run_simulator, serve, serve_app
from .config import SimulatorConfig
from .state import SIMULATOR, Simulator

__all__ = [
    "SIMULATOR",
    "Simulator",
    "SimulatorConfig",
    "create_app",
    "run_simulator",
    "serve",
    "serve_app",
]
