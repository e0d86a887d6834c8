"""The sizes of a run: the full one (`make bench`) and `--quick`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    redis_url: str = "redis://127.0.0.1:6379/9"
    reps: int = 3
    # event relay: 100 jobs × 10 subscribers; a step every relay_delay seconds per job
    relay_jobs: int = 100
    relay_subs_per_job: int = 10
    relay_steps: int = 10
    relay_delay: float = 0.7
    relay_start: float = 1.5
    # pickup
    pickup_jobs: int = 25
    pickup_arq_jobs: int = 15
    # throughput
    throughput_jobs: int = 400
    throughput_sim_jobs: int = 40
    noop_jobs: int = 2000
    # submission
    submit_parallel: int = 32
    submit_seconds: float = 3.0
    # worker concurrency: sessions of session_steps × session_delay seconds
    sessions: tuple[int, ...] = (50, 200, 500)
    session_steps: int = 3
    session_delay: float = 1.0
    # WebSocket capacity
    sockets: tuple[int, ...] = (1000, 5000, 10000)
    ws_rate: float = 200.0
    ws_duration: float = 3.0
    # peers (direct ComfyUI, comfy-api-proxy, formy-async): jobs of peer_steps × peer_step_delay
    # seconds on the simulator's 0.3.64 profile, one after another, then a backlog at once
    peer_comfyui: str = "0.3.64"
    peer_steps: int = 4
    peer_step_delay: float = 0.065
    peer_warmup: int = 3
    peer_jobs: int = 20
    peer_pause: float = 0.05
    peer_backlog: int = 50
    # the job trace: jobs of the peers row's kind through traced web and worker processes
    trace_jobs: int = 20
    # placement: jobs naming one of `placement_models` checkpoints at random, on backends that
    # take `placement_switch` seconds to load another model; `placement_job` seconds each
    placement_backends: int = 4
    placement_models: int = 3
    placement_switch: float = 2.0
    placement_job: float = 0.5
    placement_jobs: int = 60
    # fairness: user A queues `fair_backlog` jobs of `fair_job` seconds, then user B one
    fair_backlog: int = 100
    fair_job: float = 0.2

    @classmethod
    def quick(cls) -> Config:
        return cls(
            reps=1,
            relay_steps=6,
            pickup_jobs=15,
            pickup_arq_jobs=8,
            throughput_jobs=200,
            throughput_sim_jobs=20,
            noop_jobs=1000,
            submit_seconds=1.5,
            sessions=(50, 500),
            session_steps=2,
            sockets=(1000, 10000),
            ws_duration=2.0,
            peer_jobs=10,
            peer_backlog=30,
            trace_jobs=10,
            placement_jobs=24,
            fair_backlog=30,
        )
