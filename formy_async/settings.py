"""The one settings model: every environment variable the service reads, parsed and checked here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from dotenv import dotenv_values
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, HttpUrl, RedisDsn, field_validator

from .models import without_credentials

MIN_SECRET_LENGTH = 32


class BackendSpec(BaseModel):
    """One ComfyUI server of the pool: how many prompts it runs at once, how many more may wait
    queued on it behind those, and its labels."""

    url: str
    capacity: int = Field(1, ge=1, le=64)
    # prompts queued on ComfyUI ahead of time, so that it starts the next the moment one ends
    lookahead: int = Field(1, ge=0, le=8)
    labels: frozenset[str] = frozenset()

    @property
    def slots(self) -> int:
        """Prompts the pool lets the server hold: running and queued ahead."""
        return self.capacity + self.lookahead

    @property
    def label(self) -> str:
        """The URL without credentials: what dashboards and public answers may show."""
        return without_credentials(self.url)


def parse_backends(value: str) -> list[BackendSpec]:
    """`http://gpu1:8188#capacity=2&lookahead=1&labels=sdxl|flux, http://gpu2:8188` → specs."""
    specs = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        url, _, options = entry.partition("#")
        fields = dict(parse_qsl(options, keep_blank_values=True))
        unknown = set(fields) - {"capacity", "lookahead", "labels"}
        if unknown:
            raise ValueError(f"unknown backend options {sorted(unknown)} in {entry!r}")
        specs.append(
            BackendSpec(
                url=str(HttpUrl(url)).rstrip("/"),
                capacity=int(fields.get("capacity", "1")),
                lookahead=int(fields.get("lookahead", "1")),
                labels=frozenset(x for x in fields.get("labels", "").split("|") if x),
            )
        )
    if not specs:
        raise ValueError("name at least one ComfyUI URL")
    if len({s.url for s in specs}) != len(specs):
        raise ValueError("a ComfyUI URL is listed twice")
    return specs


def _env(name: str) -> AliasChoices:
    """Accept both the platform's name (`REDIS_URL`) and ours (`FORMY_REDIS_URL`)."""
    return AliasChoices(f"FORMY_{name}", name)


#: the file of variables read from the working directory, under those of the environment
ENV_FILE = ".env"


def environment_names(name: str) -> list[str]:
    """The variables a setting is read from, in order: its aliases, else `FORMY_<NAME>`."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"FORMY_{name.upper()}"]


#: a place settings are read from: what it is called, and its variables by lower-case name
Source = tuple[str, dict[str, str]]


def _sources(env_file: str | Path | None) -> list[Source]:
    """The environment, then `env_file` if there is one; a blank variable is unset."""
    sources = [("the environment", {k.lower(): v for k, v in os.environ.items() if v})]
    if env_file is not None and Path(env_file).is_file():
        values = dotenv_values(env_file)
        sources.append((".env", {k.lower(): v for k, v in values.items() if v}))
    return sources


def _lookup(field: str, sources: list[Source]) -> tuple[str, str, str] | None:
    """(name, value, where) of the setting's first name set in the first source that sets one."""
    names = environment_names(field)
    return next(
        (
            (name, found[name.lower()], where)
            for where, found in sources
            for name in names
            if name.lower() in found
        ),
        None,
    )


def _configured(env_file: str | Path | None, given: dict[str, Any]) -> dict[str, str]:
    """Each setting's value from the environment, else from `env_file`, keyed as the model takes
    it (an alias by the name it was found under). Names match in any case; blank is unset."""
    sources = _sources(env_file)
    values = {}
    for field, info in Settings.model_fields.items():
        if field in given or not given.keys().isdisjoint(environment_names(field)):
            continue  # the constructor's value comes first
        found = _lookup(field, sources)
        if found is not None:
            name, value, _ = found
            values[name if info.validation_alias else field] = value
    return values


def origins(fields: set[str], env_file: str | Path | None = ENV_FILE) -> dict[str, str]:
    """field → "NAME from the environment" or "NAME from .env", for those of `fields` set there."""
    sources = _sources(env_file)
    found = {field: _lookup(field, sources) for field in sorted(fields)}
    return {field: f"{hit[0]} from {hit[2]}" for field, hit in found.items() if hit is not None}


class Settings(BaseModel):
    """Configuration for the web and worker processes.

    Every field is read from `FORMY_<NAME>`; the ones platforms hand out (`REDIS_URL`,
    `COMFYUI_URL`, `PORT`, `HOST`, `SECRET_KEY`) are also read under their plain name. Values
    given to the constructor come first, then the environment, then `.env` (`_env_file`).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def __init__(self, _env_file: str | Path | None = ENV_FILE, **values: Any) -> None:
        super().__init__(**_configured(_env_file, values), **values)

    redis_url: RedisDsn = Field(
        RedisDsn("redis://127.0.0.1:6379/0"),
        validation_alias=_env("REDIS_URL"),
        description="redis:// or rediss:// (TLS); unset under `formy-async run`: in-process fake.",
    )
    redis_ssl_cert_reqs: Literal["required", "none"] = Field(
        "required",
        description="`none` for providers whose TLS certificate is self-signed (Heroku).",
    )
    comfyui_url: str = Field(
        "http://127.0.0.1:8188",
        validation_alias=_env("COMFYUI_URL"),
        description="One or more ComfyUI servers, comma-separated, each optionally "
        "`#capacity=N&lookahead=M&labels=a|b`. Unset under `formy-async run`: the simulator.",
    )
    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))
    port: int = Field(8080, ge=1, le=65535, validation_alias=_env("PORT"))
    secret_key: str = Field(
        "",
        validation_alias=_env("SECRET_KEY"),
        repr=False,
        description="Signs tokens, output URLs and webhooks; 32+ characters.",
    )
    cors_origins: list[str] = Field(
        [], description="Other origins that may call the API and open the WebSocket."
    )
    max_concurrent_tasks_per_user: int = Field(
        3,
        ge=1,
        validation_alias=AliasChoices(
            "FORMY_MAX_CONCURRENT_TASKS_PER_USER", "MAX_CONCURRENT_TASKS_PER_USER"
        ),
        description="Pending + processing jobs one user may have.",
    )
    submissions_per_minute: int = Field(30, ge=1, description="Per-user submission rate.")
    gpu_seconds_per_day: float = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="GPU-seconds a user's jobs may use per UTC day before submissions are "
        "refused (0: no budget); a token's `gpu_seconds_per_day` claim overrides it.",
    )
    high_priority_users: list[str] = Field(
        [], description="Users who may submit `high` priority jobs (admins always may)."
    )
    user_weights: dict[str, float] = Field(
        {},
        description="Shares of the GPUs within a priority, `alice=2,bob=0.5` (everyone else: 1); "
        "a user of weight 2 gets two turns for another's one.",
    )
    signed_url_ttl: int = Field(24 * 3600, gt=0, description="Seconds a signed output URL works.")
    page_user: str | None = Field(
        None, description="Set by `formy-async run`: the page gets a token for this user."
    )
    webhook_allow_private: bool = Field(
        False, description="Allow webhooks to loopback/private addresses (development only)."
    )
    webhook_max_attempts: int = Field(6, ge=1)
    webhook_secret: str = Field(
        "", repr=False, description="Signs webhook requests (never SECRET_KEY); enables webhooks."
    )
    metrics_token: str | None = Field(None, repr=False, description="Bearer token for /metrics.")
    storage_backend: Literal["local", "s3"] = Field(
        "local", description="`local`: a directory web and worker share; `s3`: object storage."
    )
    storage_dir: Path = Field(Path("data"), description="The local storage directory.")
    s3_bucket: str = Field("", description="S3 (or R2, MinIO…) bucket for `s3` storage.")
    s3_endpoint_url: str | None = Field(None, description="Unset for AWS; else R2 / MinIO URL.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = Field(None, repr=False)
    s3_secret_access_key: str | None = Field(None, repr=False)
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. `formy/`.")
    upload_max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest upload accepted.")
    upload_max_pixels: int = Field(40_000_000, gt=0, description="Largest image (w × h) accepted.")
    inputs_ttl: int = Field(24 * 3600, gt=0, description="Seconds uploads are kept.")
    outputs_ttl: int = Field(30 * 24 * 3600, gt=0, description="Seconds outputs are kept.")
    preview_interval: float = Field(0.5, ge=0, description="Least seconds between two previews.")
    models_cache_ttl: float = Field(30, ge=0, description="Seconds ComfyUI's model list is cached.")
    raw_graph_nodes: list[str] = Field(
        [
            "CheckpointLoaderSimple",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
            "VAEEncode",
            "SaveImage",
            "PreviewImage",
            "LoadImage",
            "ImageScaleBy",
            "ImageScale",
            "ImageBlur",
            "ImageInvert",
            "ImageCompositeMasked",
            "LoraLoader",
            "EmptyImage",
            "RepeatImageBatch",
            "SaveAnimatedWEBP",
            "SaveAnimatedPNG",
            "CreateVideo",
            "SaveVideo",
            "SaveWEBM",
            "SaveAudio",
            "SaveAudioMP3",
            "SaveAudioOpus",
        ],
        description="Node types a raw graph may use (JSON list or comma-separated).",
    )
    workflows_dir: Path = Field(Path("workflows"), description="The workflow catalogue.")

    max_jobs: int = Field(50, ge=1, description="Jobs one worker process runs at once.")
    web_worker: bool = Field(
        False,
        description="The web process runs a worker too: web and worker in one process, for a "
        "small deployment (their libraries are held once, not twice).",
    )
    worker_poll_delay: float = Field(
        0.5,
        gt=0,
        description="Most seconds between queue polls, a backstop: a queued job wakes idle "
        "workers at once, a deferred retry its worker when it falls due.",
    )
    job_timeout: float = Field(600, gt=0, description="Longest a job may run, in seconds.")
    job_max_attempts: int = Field(3, ge=1, description="Tries for transient ComfyUI faults.")
    job_max_losses: int = Field(
        5, ge=0, description="Times a job may lose its worker (killed mid-job) and run again."
    )
    lease_ttl: float = Field(
        10, gt=0, description="Seconds a running job's lease lasts without its worker renewing it."
    )
    recovery_interval: float = Field(3, gt=0, description="Seconds between sweeps for lost jobs.")
    shutdown_grace: int = Field(
        20, ge=0, description="Seconds a stopping worker lets running jobs finish (Heroku: 30)."
    )
    job_ttl: int = Field(7 * 24 * 3600, gt=0, description="Seconds job records are kept.")
    ws_queue_size: int = Field(1000, ge=10, description="Events buffered per WebSocket.")
    ws_heartbeat: float = Field(25, gt=0, description="WebSocket ping interval, in seconds.")
    ws_send_buffer: int = Field(
        32 * 1024,
        ge=4096,
        le=4 * 1024 * 1024,
        description="Bytes of a WebSocket's unsent data the kernel, and again the process, hold "
        "before its outbox fills (Linux doubles the kernel's share).",
    )
    ws_send_timeout: float = Field(
        10,
        gt=0,
        description="Seconds a send to a WebSocket may wait with nothing taken; then it is reset.",
    )
    header_timeout: float = Field(
        20,
        gt=0,
        description="Seconds a request's headers may take (from connecting, or its first byte).",
    )
    body_timeout: float = Field(
        120, gt=0, description="Seconds a request body (JSON, an upload) may take to arrive, whole."
    )
    comfy_connect_timeout: float = Field(10, gt=0)
    idempotency_ttl: int = Field(
        24 * 3600, gt=0, description="Seconds an Idempotency-Key is remembered, per user."
    )
    sse_heartbeat: float = Field(
        15, gt=0, description="Seconds between comment lines on an idle Server-Sent Events stream."
    )
    url_inputs_allow_http: bool = Field(
        False, description="Let image params be http:// URLs (https:// always may)."
    )
    url_inputs_allow_private: bool = Field(
        False,
        description="Let image URLs reach loopback/private addresses (development and tests only).",
    )
    url_input_timeout: float = Field(
        20, gt=0, description="Seconds fetching one image URL may take, redirects included."
    )
    reuse_across_users: bool = Field(
        False,
        description="Result reuse may hand one user the outputs of another user's identical job.",
    )
    catalogue_reload: float = Field(
        2,
        ge=0,
        description="Seconds between looks at FORMY_WORKFLOWS_DIR for added, changed or removed "
        "workflows, which every process then serves without a restart (0: never).",
    )
    simulator_step_delay: float = Field(0.15, ge=0, description="Embedded simulator, per step.")
    simulator_comfyui_version: str = Field(
        "0.38.1",
        pattern=r"^v?\d+(\.\d+){1,2}$",
        description="The ComfyUI release the embedded simulator imitates: 0.3.64, or 0.25 on.",
    )

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @field_validator("raw_graph_nodes", "cors_origins", "high_priority_users", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("user_weights", mode="before")
    @classmethod
    def _weights(cls, value: object) -> object:
        if not isinstance(value, str) or value.lstrip().startswith("{"):
            return value
        weights = {}
        for part in (p.strip() for p in value.split(",") if p.strip()):
            user, _, weight = part.partition("=")
            weights[user.strip()] = float(weight)
        return weights

    @field_validator("user_weights")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [user for user, weight in value.items() if not 0 < weight < 1e6]
        if bad:
            raise ValueError(f"a weight must be a number above 0 (not for {', '.join(bad)})")
        return value

    def weight(self, user: str) -> float:
        return self.user_weights.get(user, 1.0)

    def check_secret(self) -> None:
        """Refuse to serve with a guessable secret: tokens and signed URLs rest on it."""
        if len(self.secret_key) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"SECRET_KEY must be set to at least {MIN_SECRET_LENGTH} random characters "
                '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )

    def uses_embedded_redis(self) -> bool:
        """True when no Redis URL was configured: `formy-async run` brings its own."""
        return "redis_url" not in self.model_fields_set

    pool_probe_interval: float = Field(
        5, gt=0, description="Seconds between health probes of each ComfyUI backend."
    )

    def uses_embedded_comfyui(self) -> bool:
        return "comfyui_url" not in self.model_fields_set

    @field_validator("comfyui_url")
    @classmethod
    def _backends_parse(cls, value: str) -> str:
        parse_backends(value)  # refuses a malformed list at start-up, naming the variable
        return value

    @property
    def backends(self) -> list[BackendSpec]:
        return parse_backends(self.comfyui_url)

    @property
    def comfyui_base(self) -> str:
        """The first ComfyUI backend (the one the web process asks about models)."""
        return self.backends[0].url
