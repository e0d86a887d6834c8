"""The simulator's settings: which ComfyUI it imitates, timing, model lists, caching and limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from .profile import Profile, parse_version, profile_for

DEFAULT_MAX_UPLOAD_SIZE = 100 * 1024 * 1024


class SimulatorConfig(BaseModel):
    """How the fake ComfyUI behaves; the defaults mimic a stock 0.3.64 server on a slow machine.

    `comfyui_version` picks the protocol: below 0.25 the 0.3.64 behaviour, from 0.25 on (e.g.
    "0.38.1") the current release line's (see `profile.Profile` for every difference).
    """

    comfyui_version: str = "0.3.64"
    step_delay: float = Field(0.15, ge=0)
    node_delay: float = Field(0.0, ge=0)
    data_dir: Path | None = None
    checkpoints: list[str] = Field(
        default_factory=lambda: [
            "sd_xl_base_1.0.safetensors",
            "v1-5-pruned-emaonly.safetensors",
        ]
    )
    loras: list[str] = Field(
        default_factory=lambda: [
            "add_detail.safetensors",
            "pixel_art_xl.safetensors",
            "watercolor_style.safetensors",
        ]
    )
    vaes: list[str] = Field(
        default_factory=lambda: ["sdxl_vae.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors"]
    )
    diffusion_models: list[str] = Field(
        default_factory=lambda: ["flux1-dev.safetensors", "flux1-schnell.safetensors"]
    )
    controlnet: list[str] = Field(
        default_factory=lambda: [
            "control_v11f1p_sd15_depth.pth",
            "control_v11p_sd15_canny.pth",
            "control_v11p_sd15_openpose.pth",
            "controlnet-openpose-sdxl-1.0.safetensors",
        ]
    )
    previews: bool = True
    cache: bool = True
    # a loader node naming a model not in memory takes this long; `resident_models` stay loaded
    # (least recently used out first), as a GPU server holds a few models in (V)RAM
    model_load_delay: float = Field(0.0, ge=0)
    resident_models: int = Field(2, ge=1)
    max_upload_size: int = Field(DEFAULT_MAX_UPLOAD_SIZE, gt=0)
    history_size: int = Field(10000, gt=0)

    @field_validator("comfyui_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        parse_version(value)
        return value.strip()

    @property
    def profile(self) -> Profile:
        return profile_for(self.comfyui_version)

    @property
    def is_new_profile(self) -> bool:
        """True when imitating ComfyUI 0.25 or later."""
        return self.profile.new
