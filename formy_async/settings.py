"""The one settings model: every environment variable the service reads, parsed and checked here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, HttpUrl, RedisDsn
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    """Accept both the platform's name (`REDIS_URL`) and ours (`FORMY_REDIS_URL`)."""
    return AliasChoices(f"FORMY_{name}", name)


class Settings(BaseSettings):
    """Configuration for the web and worker processes.

    Every field is read from `FORMY_<NAME>`; the ones platforms hand out (`REDIS_URL`,
    `COMFYUI_URL`, `PORT`, `HOST`, `SECRET_KEY`) are also read under their plain name.
    """

    model_config = SettingsConfigDict(
        env_prefix="FORMY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    redis_url: RedisDsn = Field(
        RedisDsn("redis://127.0.0.1:6379/0"),
        validation_alias=_env("REDIS_URL"),
        description="redis:// or rediss:// (TLS); unset under `formy-async run`: in-process fake.",
    )
    redis_ssl_cert_reqs: Literal["required", "none"] = Field(
        "required",
        description="`none` for providers whose TLS certificate is self-signed (Heroku).",
    )
    comfyui_url: HttpUrl = Field(
        HttpUrl("http://127.0.0.1:8188"),
        validation_alias=_env("COMFYUI_URL"),
        description="Base URL of the ComfyUI server. Unset under `formy-async run`: the simulator.",
    )
    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))
    port: int = Field(8080, ge=1, le=65535, validation_alias=_env("PORT"))
    secret_key: str = Field("", validation_alias=_env("SECRET_KEY"), repr=False)
    storage_dir: Path = Field(Path("data"), description="Where inputs and outputs are stored.")
    workflows_dir: Path = Field(Path("workflows"), description="The workflow catalogue.")

    max_jobs: int = Field(50, ge=1, description="Jobs one worker process runs at once.")
    worker_poll_delay: float = Field(0.05, gt=0, description="Seconds between queue polls.")
    job_timeout: float = Field(600, gt=0, description="Longest a job may run, in seconds.")
    job_ttl: int = Field(7 * 24 * 3600, gt=0, description="Seconds job records are kept.")
    ws_queue_size: int = Field(1000, ge=10, description="Events buffered per WebSocket.")
    ws_heartbeat: float = Field(25, gt=0, description="WebSocket ping interval, in seconds.")
    comfy_connect_timeout: float = Field(10, gt=0)
    simulator_step_delay: float = Field(0.15, ge=0, description="Embedded simulator, per step.")

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    def uses_embedded_redis(self) -> bool:
        """True when no Redis URL was configured: `formy-async run` brings its own."""
        return "redis_url" not in self.model_fields_set

    def uses_embedded_comfyui(self) -> bool:
        return "comfyui_url" not in self.model_fields_set

    @property
    def comfyui_base(self) -> str:
        return str(self.comfyui_url).rstrip("/")

    @property
    def outputs_dir(self) -> Path:
        return self.storage_dir / "outputs"
