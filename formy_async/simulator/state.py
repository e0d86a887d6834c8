"""The simulator's per-app state object and the AppKey that holds it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from .config import SimulatorConfig
from .engine import Engine
from .files import Dirs
from .hub import Hub
from .nodes import Env, NodeDef
from .prompt_queue import PromptQueue


@dataclass
class Simulator:
    """One fake ComfyUI: settings, directories, queue, sockets and the worker."""

    config: SimulatorConfig
    env: Env
    registry: Mapping[str, NodeDef]
    hub: Hub
    queue: PromptQueue
    engine: Engine
    owns_data_dir: bool

    @property
    def dirs(self) -> Dirs:
        return self.env.dirs


SIMULATOR = web.AppKey("formy_simulator", Simulator)
