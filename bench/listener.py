"""When each job event was published: a pub/sub subscriber of its own, apart from any web process.

Writes one line per message, `<time.monotonic()> <job_id> <seq>`, to the file it is given, as
messages arrive. Its clock is the one the emitter and the browser-side client stamp with, so the
relay's path splits at the publish: ComfyUI's send → published (the worker's hop: its socket,
its script round trip) and published → browser (the web's hop, what the bare chain does).
The bare chain runs one too (`--pattern bare:events:*`), so that both chains carry the same
extra subscriber: Redis sends each event twice, and one more process wakes for it.
`python -m bench.listener --redis URL --out FILE [--pattern P]`
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from redis import Redis

from formy_async.store import keys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pattern", default=keys.EVENTS_PATTERN)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pubsub = Redis.from_url(args.redis).pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.psubscribe(args.pattern)
    with open(args.out, "w", buffering=1) as out:
        print("ready", flush=True)
        for message in pubsub.listen():
            moment = time.monotonic()  # on receipt, before anything else
            if message["type"] != "pmessage":
                continue
            event = json.loads(message["data"])
            out.write(f"{moment} {event['job_id']} {event['seq']}\n")


def read(path: Path) -> dict[tuple[str, int], float]:
    """(job_id, seq) → when the listener received that event's publish."""
    out: dict[tuple[str, int], float] = {}
    with open(path) as lines:
        for line in lines:
            moment, job_id, seq = line.split()
            out[(job_id, int(seq))] = float(moment)
    return out


if __name__ == "__main__":
    main()
