"""The project's ComfyUI simulator in a process of its own: `python -m bench.sim --port P`."""

from __future__ import annotations

import argparse
import asyncio

from formy_async.simulator import SimulatorConfig, create_app

from .serving import serve_until_signal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()
    config = SimulatorConfig(step_delay=args.step_delay, previews=False)
    asyncio.run(serve_until_signal(create_app(config), args.port))


if __name__ == "__main__":
    main()
