"""Every Redis key, pub/sub channel and arq function name the service uses (read by store/ only)."""

from __future__ import annotations

PREFIX = "formy"

#: the arq function that runs one job; the web side enqueues it by this name only
RUN_JOB = "run_job"
#: the arq function that POSTs a finished job to its webhook
DELIVER_WEBHOOK = "deliver_webhook"

#: one channel per job; a web process subscribes to those of the jobs its clients follow
EVENTS_CHANNEL_PREFIX = f"{PREFIX}:events:"
#: every job's channel, for a listener of them all
EVENTS_PATTERN = f"{EVENTS_CHANNEL_PREFIX}*"
#: a channel no one publishes to, which each web process's event hub holds (see store/hub.py)
HUB_CHANNEL = f"{PREFIX}:hub"


def job(job_id: str) -> str:
    """The job record (JSON)."""
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    """The job's event log: a list whose item i holds event seq i + 1."""
    return f"{PREFIX}:job:{job_id}:events"


def job_final(job_id: str) -> str:
    """Set once the job has reached a final state; no event is appended after it."""
    return f"{PREFIX}:job:{job_id}:final"


def events_channel(job_id: str) -> str:
    return f"{EVENTS_CHANNEL_PREFIX}{job_id}"


def job_id_from_channel(channel: str) -> str:
    return channel[len(EVENTS_CHANNEL_PREFIX) :]


def jobs_index() -> str:
    """Sorted set of every job id, scored by creation time (for listing, newest first)."""
    return f"{PREFIX}:jobs"


def job_cancel(job_id: str) -> str:
    """Set when a user asked to cancel the job while a worker may be running it."""
    return f"{PREFIX}:job:{job_id}:cancel"


def job_preview(job_id: str) -> str:
    """Hash with the job's latest preview image (`data`, `content_type`)."""
    return f"{PREFIX}:job:{job_id}:preview"


def upload(upload_id: str) -> str:
    """An upload's record (JSON); its bytes are in storage."""
    return f"{PREFIX}:upload:{upload_id}"


def asset(asset_id: str) -> str:
    """A v2 asset's record (JSON); its bytes are in storage under their hash."""
    return f"{PREFIX}:asset:{asset_id}"


def asset_by_hash(user: str, digest: str) -> str:
    """The id of `user`'s latest asset with these bytes (`blake3:<hex>`)."""
    return f"{PREFIX}:asset-hash:{user}:{digest}"


def asset_upload_claim(user: str, key_digest: str) -> str:
    """What `user`'s upload with an Idempotency-Key (its digest) made: `<hash> <id> <new>`."""
    return f"{PREFIX}:asset-idem:{user}:{key_digest}"


def asset_write_lock(hex_digest: str) -> str:
    """Held while the bytes of one hash are written to storage."""
    return f"{PREFIX}:asset-write:{hex_digest}"


#: workers subscribe here to hear about cancelled jobs at once
CANCEL_CHANNEL = f"{PREFIX}:cancel"

#: published when a ComfyUI slot is freed (or a backend is back): waiting jobs try at once
SLOTS_CHANNEL = f"{PREFIX}:slots"

#: published when a job is queued, so that idle workers take it at once instead of at their
#: next poll
WAKE_CHANNEL = f"{PREFIX}:wake"


def active_jobs() -> str:
    """Sorted set of the jobs not yet final (by creation time): what crash recovery sweeps."""
    return f"{PREFIX}:active"


def job_lease(job_id: str) -> str:
    """Held (with a short TTL, kept fresh) by the worker running the job."""
    return f"{PREFIX}:job:{job_id}:lease"


#: only one worker sweeps for lost jobs at a time
RECOVERY_LOCK = f"{PREFIX}:recovery:lock"

#: arq's own keys, which recovery must touch to hand a lost job back to the queue
ARQ_QUEUE = "arq:queue"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_JOB_PREFIX = "arq:job:"
ARQ_RETRY_PREFIX = "arq:retry:"


def job_last_append(job_id: str) -> str:
    """`<event id> <seq>` of the job's last appended event: makes a retried append idempotent."""
    return f"{PREFIX}:job:{job_id}:last"


def finished(status: str) -> str:
    """Sorted set of the jobs that ended with `status`, scored by when (for stats)."""
    return f"{PREFIX}:finished:{status}"


def worker_heartbeat(worker_id: str) -> str:
    """A worker's heartbeat (JSON, short TTL): what it runs and on which backend."""
    return f"{PREFIX}:worker:{worker_id}"


#: sorted set of worker ids, scored by when each last beat (its heartbeat key says the rest)
WORKERS = f"{PREFIX}:workers"

#: the hash every process adds its job counters and histogram buckets to (see counters)
METRICS = f"{PREFIX}:metrics"


def user_jobs(user: str) -> str:
    """Sorted set of one user's jobs by creation time: their listing."""
    return f"{PREFIX}:user:{user}:jobs"


def user_active(user: str) -> str:
    """Sorted set of one user's jobs not yet final: what their concurrency limit counts."""
    return f"{PREFIX}:user:{user}:active"


def submission_window(user: str, minute: int) -> str:
    """Count of one user's submissions in one minute (the rate limit)."""
    return f"{PREFIX}:rate:{user}:{minute}"


#: jobs waiting for a free ComfyUI slot, scored by their place in line (priority, then age)
POOL_WAITING = f"{PREFIX}:pool:waiting"
#: `<prefix><job id>` lives while the job's worker keeps asking for a slot
POOL_WAIT_PREFIX = f"{PREFIX}:pool:wait:"


def backend_slots(url: str) -> str:
    """Sorted set of the jobs holding a slot on a ComfyUI backend, scored by lease end (ms)."""
    return f"{PREFIX}:backend:{url}:slots"


def backend_down(url: str) -> str:
    """Set (with a TTL: the probe backoff) while a backend is out of the rotation."""
    return f"{PREFIX}:backend:{url}:down"


def backend_failures(url: str) -> str:
    return f"{PREFIX}:backend:{url}:failures"


def backend_error(url: str) -> str:
    """The last error a backend gave."""
    return f"{PREFIX}:backend:{url}:error"


def backend_warm(url: str) -> str:
    """Hash of what a backend is known to hold: `models` (JSON list: the loader inputs of the
    last prompt queued there, what ComfyUI's cache keeps), `prompt` (that prompt's id),
    `switch` and `run` (seconds: moving averages of a model load and of a prompt's execution)."""
    return f"{PREFIX}:backend:{url}:warm"


def idempotency(user: str, key_digest: str) -> str:
    """`<body digest> <job id>` of the job one user's Idempotency-Key created (24 h)."""
    return f"{PREFIX}:idem:{user}:{key_digest}"


def reuse_leader(scope: str, fingerprint: str) -> str:
    """The id of the latest job that runs (or ran) one request: what identical ones reuse.

    `scope` is the user, or `*` where reuse crosses users."""
    return f"{PREFIX}:reuse:{scope}:{fingerprint}"


def reuse_followers(leader_id: str) -> str:
    """Set of the jobs waiting for a running job's outputs instead of running themselves."""
    return f"{PREFIX}:job:{leader_id}:followers"


#: sorted set of the running jobs that others follow (by when the first one began to): what
#: every web process sweeps, so that followers finish even if the process that took them stops
REUSE_FOLLOWING = f"{PREFIX}:reuse:following"


def usage(day: str, user: str) -> str:
    """Hash of one user's totals on one UTC day (`YYYY-MM-DD`): `jobs`, `gpu_seconds`,
    `queue_wait_seconds`, and each again per backend as `backend:<label>:<field>`."""
    return f"{PREFIX}:usage:{day}:user:{user}"


def usage_users(day: str) -> str:
    """Set of the users with usage on one UTC day (what an admin's report reads)."""
    return f"{PREFIX}:usage:{day}:users"


def job_usage(job_id: str) -> str:
    """Set once the job's usage is counted: it never counts twice."""
    return f"{PREFIX}:job:{job_id}:usage"


#: sorted set of the runs not yet finished, in fair order: priority first, then each user's
#: turn (start-time fair queueing; a job's score is its priority offset + its start tag)
FAIR_LINE = f"{PREFIX}:fair:line"
#: hash user → the virtual time at which that user's queued runs end (their next start tag)
FAIR_FINISH = f"{PREFIX}:fair:finish"
#: the virtual time: the start tag of the latest run given a ComfyUI slot
FAIR_CLOCK = f"{PREFIX}:fair:clock"
#: the GPU-seconds of a typical job (a moving average): the unit of the fair line's tags
FAIR_TYPICAL = f"{PREFIX}:fair:typical"
#: held by the one worker that tells pending jobs their place in line, for about a second
POSITIONS_LOCK = f"{PREFIX}:fair:positions-lock"
