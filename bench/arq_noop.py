"""Raw arq: a worker whose one function does nothing but return its start time.

`python -m bench.arq_noop --redis URL --poll-delay S --max-jobs N`; queue `bench:arq`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

QUEUE = "bench:arq"


async def noop(ctx: dict[str, Any]) -> float:
    return time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--poll-delay", type=float, default=0.5)
    parser.add_argument("--max-jobs", type=int, default=10)
    args = parser.parse_args()
    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(args.redis),
        queue_name=QUEUE,
        poll_delay=args.poll_delay,
        max_jobs=args.max_jobs,
        keep_result=600,
        health_check_interval=1,
    )
    worker.run()


if __name__ == "__main__":
    main()
