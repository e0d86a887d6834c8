"""Node-type machinery: definitions, the values flowing between nodes, and /object_info entries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from PIL import Image

from .config import SimulatorConfig
from .files import Dirs

JsonDict = dict[str, Any]
# One input's spec as /object_info shows it: [TYPE] or [TYPE, {options}]; TYPE may be a combo list.
InputSpec = list[Any]
Sections = dict[str, dict[str, Any]]
Images = list[Image.Image]


class ModelMemory:
    """The models a server holds loaded, least recently used first; loading another costs
    `model_load_delay` seconds and pushes the oldest out past `resident_models`."""

    def __init__(self) -> None:
        self.loaded: dict[str, None] = {}  # insertion order: least recently used first

    async def load(self, name: str, config: SimulatorConfig) -> None:
        if name in self.loaded:
            self.loaded[name] = self.loaded.pop(name)  # most recent now
            return
        if config.model_load_delay:
            await asyncio.sleep(config.model_load_delay)
        self.loaded[name] = None
        while len(self.loaded) > config.resident_models:
            del self.loaded[next(iter(self.loaded))]

    def clear(self) -> None:
        self.loaded.clear()


@dataclass(frozen=True)
class Env:
    """What node specs and node code may look at: settings, directories, models in memory."""

    config: SimulatorConfig
    dirs: Dirs
    memory: ModelMemory = field(default_factory=ModelMemory)

    async def load_model(self, name: str) -> None:
        await self.memory.load(name, self.config)


@dataclass(frozen=True, eq=False)
class Model:
    name: str
    loras: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        return f"<ModelPatcher {self.name}>"


@dataclass(frozen=True, eq=False)
class Clip:
    name: str
    loras: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        return f"<comfy.sd.CLIP {self.name}>"


@dataclass(frozen=True, eq=False)
class Vae:
    name: str

    def __str__(self) -> str:
        return f"<comfy.sd.VAE {self.name}>"


@dataclass(frozen=True, eq=False)
class ControlNet:
    name: str

    def __str__(self) -> str:
        return f"<comfy.controlnet.ControlNet {self.name}>"


@dataclass(frozen=True, eq=False)
class ControlHint:
    """A ControlNet applied to a conditioning: its hint images, strength and step range."""

    control_net: str
    images: tuple[Image.Image, ...]
    strength: float
    start_percent: float = 0.0
    end_percent: float = 1.0


@dataclass(frozen=True, eq=False)
class Conditioning:
    text: str
    clip: str
    controls: tuple[ControlHint, ...] = ()

    def __str__(self) -> str:
        control = f"'control': <{len(self.controls)} controlnet(s)>" if self.controls else ""
        return f"[[tensor(<conditioning {self.text[:40]!r}>), {{{control}}}]]"


@dataclass(frozen=True, eq=False)
class Latent:
    """A latent batch: just the facts that decide what VAEDecode will draw."""

    width: int
    height: int
    batch_size: int
    seed: int | None = None
    positive: str = ""
    negative: str = ""
    model: str = ""
    denoise: float = 1.0
    source: tuple[Image.Image, ...] = ()
    controls: tuple[ControlHint, ...] = ()

    def __str__(self) -> str:
        shape = f"[{self.batch_size}, 4, {self.height // 8}, {self.width // 8}]"
        return f"{{'samples': tensor(<latent shape={shape}>)}}"


@dataclass(frozen=True, eq=False)
class Audio:
    """AUDIO: a batch of clips, each interleaved little-endian float32 samples (ComfyUI: a
    waveform tensor [batch, channels, samples] and its sample rate)."""

    sample_rate: int
    channels: int
    clips: tuple[bytes, ...]

    @property
    def samples(self) -> int:
        return len(self.clips[0]) // (4 * self.channels) if self.clips else 0

    def __str__(self) -> str:
        shape = f"[{len(self.clips)}, {self.channels}, {self.samples}]"
        return (
            f"{{'waveform': tensor(<waveform shape={shape}>), 'sample_rate': {self.sample_rate}}}"
        )


@dataclass(frozen=True, eq=False)
class Video:
    """VIDEO: frames, frame rate and optional audio (ComfyUI's VideoFromComponents)."""

    frames: tuple[Image.Image, ...]
    frame_rate: Fraction
    audio: Audio | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size if self.frames else (0, 0)

    def __str__(self) -> str:
        return "<comfy_api.latest._input_impl.video_types.VideoFromComponents object>"


class Interrupted(Exception):
    """The process-wide interrupt flag was seen; ComfyUI's InterruptProcessingException."""


class NodeContext(Protocol):
    """What a running node gets from the engine."""

    @property
    def env(self) -> Env: ...
    @property
    def node_id(self) -> str: ...
    @property
    def prompt(self) -> JsonDict: ...
    @property
    def extra_pnginfo(self) -> JsonDict | None: ...

    async def progress(
        self, value: int | float, total: int | float, preview: Image.Image | None = None
    ) -> None:
        """Report a ProgressBar step; raises Interrupted when the interrupt flag is set."""

    def progress_text(self, text: str) -> None:
        """Send a binary TEXT frame (event 3) to everyone."""


@dataclass
class NodeResult:
    outputs: tuple[Any, ...]
    ui: JsonDict | None = None


RunFn = Callable[[NodeContext, JsonDict], Awaitable[NodeResult]]
ValidateFn = Callable[[Env, JsonDict], "bool | str"]
ChangedFn = Callable[[Env, JsonDict], str]


@dataclass(frozen=True)
class NodeDef:
    """One node class: its inputs (computed per call, combos can change), outputs and behaviour."""

    name: str
    display_name: str | None
    category: str
    inputs: Callable[[Env], Sections]
    outputs: tuple[str, ...]
    run: RunFn
    output_names: tuple[str, ...] = ()
    output_node: bool = False
    description: str = ""
    python_module: str = "nodes"
    # VALIDATE_INPUTS: the inputs it takes (they skip min/max/combo checks) and the check itself.
    validate_args: tuple[str, ...] = ()
    validate: ValidateFn | None = None
    is_changed: ChangedFn | None = None
    extra_info: JsonDict = field(default_factory=dict)
    # A V3-schema node (comfy_api io.ComfyNode): /object_info shows its NodeInfoV1 dataclass,
    # which always carries output_tooltips, deprecated, experimental and api_node.
    v3: bool = False
    output_tooltips: tuple[str | None, ...] = ()
    search_aliases: tuple[str, ...] = ()
    essentials_category: str | None = None

    def info(self, env: Env) -> JsonDict:
        """The /object_info entry; newer ComfyUI adds keys to both node kinds (observed 0.33)."""
        sections = self.inputs(env)
        new = env.config.is_new_profile
        head: JsonDict = {
            "input": sections,
            "input_order": {key: list(value) for key, value in sections.items()},
            **({"is_input_list": False} if new else {}),
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
        }
        if self.v3:
            head["output_tooltips"] = list(self.output_tooltips) or [None] * len(self.outputs)
            head.update({"output_matchtypes": None} if new else {})
        body: JsonDict = {
            "name": self.name,
            "display_name": self.display_name if self.v3 else self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        return {**head, **body, **self._info_tail(new), **self.extra_info}

    def _info_tail(self, new: bool) -> JsonDict:
        aliases = list(self.search_aliases)
        if not self.v3:
            return {"has_intermediate_output": False, "search_aliases": aliases} if new else {}
        if not new:
            return {"deprecated": False, "experimental": False, "api_node": False}
        return {
            "deprecated": False,
            "experimental": False,
            "dev_only": False,
            "api_node": False,
            "price_badge": None,
            "search_aliases": aliases or None,
            "essentials_category": self.essentials_category,
            "has_intermediate_output": False,
        }


def spec_of(sections: Sections, name: str) -> tuple[str, InputSpec] | None:
    """Find an input (required first, then optional) with the section it belongs to."""
    for section in ("required", "optional"):
        found = sections.get(section, {}).get(name)
        if found is not None:
            return section, found
    return None


def int_spec(default: int, minimum: int, maximum: int, step: int = 1, **extra: Any) -> InputSpec:
    return ["INT", {"default": default, "min": minimum, "max": maximum, "step": step, **extra}]


def float_spec(
    default: float, minimum: float, maximum: float, step: float = 0.01, **extra: Any
) -> InputSpec:
    options = {"default": default, "min": minimum, "max": maximum, "step": step, **extra}
    return ["FLOAT", options]


def combo_spec(options: list[str], **extra: Any) -> InputSpec:
    return [list(options), extra] if extra else [list(options)]


def format_value(value: Any) -> Any:
    """How execution_error shows an input value (ComfyUI stringifies non-primitives)."""
    if value is None or isinstance(value, int | float | bool | str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
        width, height = value[0].size
        return f"tensor(<image batch shape=[{len(value)}, {height}, {width}, 3]>)"
    if isinstance(value, Image.Image):
        return f"tensor(<mask shape=[1, {value.height}, {value.width}]>)"
    return str(value)


V3_HIDDEN = {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
CLASSIC_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def v3_combo(options: list[str], **extra: Any) -> InputSpec:
    """A V3 io.Combo input as NodeInfoV1 shows it: type "COMBO", the options in the dict."""
    tooltip = {"tooltip": extra.pop("tooltip")} if "tooltip" in extra else {}
    default = {"default": extra.pop("default")} if "default" in extra else {}
    return ["COMBO", {**tooltip, **default, "multiselect": False, "options": options, **extra}]
