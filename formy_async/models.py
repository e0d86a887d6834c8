"""The wire models: jobs, their outputs and errors, job events, and the WebSocket messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

JobStatus = Literal["pending", "processing", "done", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


def without_credentials(url: str) -> str:
    """A URL without the user and password it may hold: what logs and answers may show."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def now() -> float:
    """Wall-clock time as Unix seconds: what every `ts` and `*_at` field holds."""
    return time.time()


OutputKind = Literal["image", "video", "audio", "3d", "text", "file"]


class OutputFile(BaseModel):
    """One file a job produced, as stored by the service: what it is, how big, how long."""

    filename: str
    url: str
    kind: OutputKind = "image"
    content_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(None, description="seconds, for video and audio")
    animated: bool = Field(False, description="an animated image (WEBP, PNG)")
    size: int
    node_id: str


class OutputText(BaseModel):
    """Text an output node produced (PreviewAny and the like): part of the job's result."""

    node_id: str
    text: str


class JobError(BaseModel):
    """Why a job failed: a stable `code`, a readable `message`, and ComfyUI's details if any."""

    code: str
    message: str
    details: Any = None


class NodeProgress(BaseModel):
    """Where a running job is: the node, its step (`value` of `max`), and nodes done of all."""

    node: str
    node_type: str | None = None
    value: float = 0
    max: float = 1
    nodes_done: int | None = None
    nodes_total: int | None = None


class JobMetrics(BaseModel):
    """What a job used of ComfyUI: its wait, its execution (the GPU-seconds it counts), its
    model loads, and where it ran."""

    queue_wait_seconds: float | None = Field(
        None, description="from its submission until ComfyUI began executing it"
    )
    execution_seconds: float | None = Field(
        None, description="ComfyUI's execution of its prompt, start to end: its GPU-seconds"
    )
    execution_clock: Literal["comfyui", "worker"] | None = Field(
        None,
        description="whose clock timed the execution: `comfyui` (the execution timestamps of "
        "the prompt's history), or `worker` when the server gave none (a time limit, a cancel)",
    )
    model_switch_seconds: float | None = Field(
        None,
        description="how long its loader nodes ran (they were not cached: models were "
        "loaded); null when none ran, so that nothing was measured",
    )
    backend: str | None = Field(
        None, description="(admins) the ComfyUI server it ran on, as its label (no credentials)"
    )


class Job(BaseModel):
    """A job as stored (what users see of it is a `JobView`)."""

    id: str
    user: str = ""
    workflow: str
    params: dict[str, Any]
    graph: dict[str, Any] | None = Field(None, description="a raw graph (admins only)")
    webhook_url: str | None = None
    status: JobStatus = "pending"
    progress: int = Field(0, ge=0, le=100)
    created_at: float = Field(default_factory=now)
    started_at: float | None = None
    #: when ComfyUI began the prompt (the first of its messages the worker heard): a worker
    #: that takes the prompt over counts the time limit from then, not from the take-over
    executing_at: float | None = None
    finished_at: float | None = None
    prompt_id: str | None = None
    backend: str | None = Field(None, description="the ComfyUI server it runs on")
    client_id: str | None = Field(
        None,
        description="the WebSocket client id its prompt was queued with (ComfyUI sends the "
        "prompt's progress to that id only); null once the attempt stopped its prompt itself",
    )
    time_limit: float | None = None
    priority: Literal["high", "normal", "low"] = "normal"
    attempt: int = 0
    losses: int = 0
    outputs: list[OutputFile] = []
    texts: list[OutputText] = []
    error: JobError | None = None
    reused_from: str | None = Field(
        None, description="the job that ran: this one finished with its outputs (not copied)"
    )
    metrics: JobMetrics | None = Field(None, description="set when it ran on ComfyUI")
    queue_position: int | None = Field(None, description="while pending: its place in line")
    eta_seconds: float | None = Field(None, description="while pending: seconds until it starts")
    step: NodeProgress | None = Field(None, description="while running: the latest progress")
    metadata: dict[str, str] = Field({}, description="string labels given at submission")
    extra_data: dict[str, Any] | None = Field(
        None, description="sent with the prompt to ComfyUI (a partner-node key): never shown"
    )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def files_of(self) -> str:
        """The job whose stored files this job's outputs are (its own, unless reused)."""
        return self.reused_from or self.id


class JobView(BaseModel):
    """A job as its owner (and its webhook) sees it: chosen fields, and the links to follow."""

    id: str
    user: str
    workflow: str
    params: dict[str, Any]
    webhook_url: str | None = None
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    prompt_id: str | None = None
    time_limit: float | None = None
    priority: Literal["high", "normal", "low"] = "normal"
    outputs: list[OutputFile] = []
    texts: list[OutputText] = []
    error: JobError | None = None
    reused_from: str | None = None
    queue_position: int | None = Field(
        None, description="while pending: its place in line (1: next)"
    )
    eta_seconds: float | None = Field(None, description="while pending: about when it starts, in s")
    metrics: JobMetrics | None = None
    metadata: dict[str, str] = Field({}, description="labels given at submission (v2 API)")
    links: dict[str, str]

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def of(cls, job: Job, sign: Callable[[str], str] | None = None) -> Self:
        """The job as shown; `sign` turns output paths into signed URLs."""
        outputs = [
            o.model_copy(update={"url": sign(o.url)}) if sign is not None else o
            for o in job.outputs
        ]
        return cls(
            **cls._fields_of(job),
            outputs=outputs,
            links={"self": f"/api/jobs/{job.id}", "websocket": "/ws"},
        )

    @classmethod
    def _fields_of(cls, job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "user": job.user,
            "workflow": job.workflow,
            "params": job.params,
            "webhook_url": job.webhook_url,
            "status": job.status,
            "progress": job.progress,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "prompt_id": job.prompt_id,
            "time_limit": job.time_limit,
            "priority": job.priority,
            "texts": job.texts,
            "error": job.error,
            "reused_from": job.reused_from,
            "queue_position": job.queue_position,
            "eta_seconds": job.eta_seconds,
            "metadata": job.metadata,
            # where it ran is for admins (AdminJobView), as the job's own `backend` is
            "metrics": job.metrics.model_copy(update={"backend": None}) if job.metrics else None,
        }


class AdminJobView(JobView):
    """A job as an admin sees it: also where it runs and how many tries it took."""

    backend: str | None = Field(None, description="the ComfyUI server it runs on (no credentials)")
    attempt: int = 0
    losses: int = 0

    @classmethod
    def _fields_of(cls, job: Job) -> dict[str, Any]:
        backend = without_credentials(job.backend) if job.backend else None
        return {
            **super()._fields_of(job),
            "backend": backend,
            "attempt": job.attempt,
            "losses": job.losses,
            "metrics": job.metrics,
        }


class Asset(BaseModel):
    """A file stored by `POST /api/v2/assets`, named by the blake3 hash of its bytes; a graph
    refers to it by `id` in a `core/ASSET` reference."""

    id: str
    user: str = ""
    hash: str = Field(description="`blake3:<hex>` of the bytes, computed by the service")
    size: int
    content_type: str
    file_path: str | None = Field(None, description="the name it was uploaded under")
    created_at: float = Field(default_factory=now)
    expires_at: float

    @property
    def hex(self) -> str:
        return self.hash.removeprefix("blake3:")


class SubmitJob(BaseModel):
    """Body of `POST /api/jobs`: a workflow and its params, or (admins) a raw API-format graph."""

    model_config = ConfigDict(extra="forbid")

    workflow: str | None = Field(None, min_length=1, max_length=100)
    params: dict[str, Any] = {}
    graph: dict[str, dict[str, Any]] | None = Field(None, max_length=500)
    webhook_url: str | None = Field(None, max_length=2000)
    priority: Literal["high", "normal", "low"] = "normal"
    time_limit: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds the job may run; defaults to the workflow's limit.",
    )
    reuse: bool | None = Field(
        None,
        strict=True,
        description="Finish at once with the outputs of an identical finished job (same "
        "workflow, params and seed, input contents), or follow one that is running; unset: "
        "as the workflow's manifest says (`reuse`, off unless it is set there).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> SubmitJob:
        if (self.workflow is None) == (self.graph is None):
            raise ValueError("give either `workflow` (with `params`) or `graph`")
        return self


class UsageTotals(BaseModel):
    """Jobs that ran on ComfyUI, and their GPU-seconds and queue wait, summed."""

    jobs: int = 0
    gpu_seconds: float = 0.0
    queue_wait_seconds: float = 0.0

    def add(self, other: UsageTotals) -> None:
        self.jobs += other.jobs
        self.gpu_seconds += other.gpu_seconds
        self.queue_wait_seconds += other.queue_wait_seconds


class UsageDay(BaseModel):
    """One UTC day's totals (for admins, also by user and by backend)."""

    day: str = Field(description="the UTC day, YYYY-MM-DD; a job counts on the day it ended")
    jobs: int = 0
    gpu_seconds: float = 0.0
    queue_wait_seconds: float = 0.0
    users: dict[str, UsageTotals] | None = Field(None, description="(admins) by user")
    backends: dict[str, UsageTotals] | None = Field(None, description="(admins) by backend")


class Usage(BaseModel):
    """`GET /api/usage`: a user's (or, for admins, everyone's) totals by day, newest first."""

    user: str | None = Field(description="whose usage; null: every user's (admins)")
    gpu_seconds_per_day: float | None = Field(
        description="the caller's daily GPU-seconds budget; null: none"
    )
    days: list[UsageDay]
    total: UsageTotals


class Upload(BaseModel):
    """An input image stored by `POST /api/uploads`; job params refer to it by `id`."""

    id: str
    user: str = ""
    format: Literal["png", "jpeg", "webp"]
    content_type: str
    width: int
    height: int
    size: int
    created_at: float = Field(default_factory=now)
    sha256: str | None = Field(None, description="of the stored bytes: what result reuse compares")
    source_url: str | None = Field(None, description="the URL it was fetched from, if it was")

    @property
    def url(self) -> str:
        return f"/api/uploads/{self.id}"

    def view(self, sign: Callable[[str], str] | None = None) -> dict[str, Any]:
        shown = self.model_dump(exclude={"user", "sha256", "source_url"})
        return {**shown, "url": sign(self.url) if sign else self.url}


# --- job events -----------------------------------------------------------------------------
# `job_id` and `seq` come first so that the event log can splice the sequence number in
# (see jobstore); every event carries the job's status and progress at that moment.


class _Event(BaseModel):
    job_id: str
    seq: int = 0
    ts: float = Field(default_factory=now)
    status: JobStatus = "pending"
    progress: int = 0


class Submitted(_Event):
    type: Literal["submitted"] = "submitted"
    workflow: str


class Started(_Event):
    type: Literal["started"] = "started"
    prompt_id: str
    resumed: bool = Field(
        False,
        description="the prompt was already on ComfyUI, queued by an attempt whose worker was "
        "lost: this attempt follows it (or collects what it made), it does not run it again",
    )


class Progress(_Event):
    """A node started (value 0 of max 1) or reported a step (a sampler's value of max)."""

    type: Literal["progress"] = "progress"
    node: str
    node_type: str | None = None
    value: float
    max: float
    nodes_done: int | None = Field(None, description="nodes of the graph finished (or cached)")
    nodes_total: int | None = Field(None, description="nodes in the graph")


class Preview(_Event):
    """The latest live preview of a running sampler (throttled); fetch it from `url`."""

    type: Literal["preview"] = "preview"
    node: str | None = None
    url: str
    content_type: str


class Retrying(_Event):
    """A transient fault ended this attempt; the job runs again after `retry_in` seconds."""

    type: Literal["retrying"] = "retrying"
    attempt: int
    max_attempts: int
    retry_in: float
    error: JobError


class Output(_Event):
    type: Literal["output"] = "output"
    output: OutputFile


class Done(_Event):
    type: Literal["done"] = "done"
    outputs: list[OutputFile]
    texts: list[OutputText] = []


class Failed(_Event):
    type: Literal["failed"] = "failed"
    error: JobError


class Cancelled(_Event):
    type: Literal["cancelled"] = "cancelled"


class Queued(_Event):
    """A pending job's place in the waiting line (1: next) and when it should start."""

    type: Literal["queued"] = "queued"
    position: int
    eta_seconds: float | None = None


Event = Annotated[
    Submitted
    | Queued
    | Started
    | Progress
    | Preview
    | Retrying
    | Output
    | Done
    | Failed
    | Cancelled,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
FINAL_EVENT_TYPES: frozenset[str] = frozenset({"done", "failed", "cancelled"})


# --- WebSocket messages from the browser ----------------------------------------------------

#: the largest seq a client may name: every JSON reader holds it exactly (a JavaScript number
#: past it is not an integer any more), and Redis takes it as a list index
MAX_SEQ = 2**53 - 1


class Subscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["subscribe"]
    job_id: str = Field(min_length=1, max_length=64)
    after: int = Field(0, ge=0, le=MAX_SEQ)


class Unsubscribe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["unsubscribe"]
    job_id: str = Field(min_length=1, max_length=64)


class Authenticate(BaseModel):
    """The token as the first message, for clients that cannot put it in the URL."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=4096)


ClientMessage = Annotated[Subscribe | Unsubscribe | Authenticate, Field(discriminator="type")]
CLIENT_MESSAGE_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
