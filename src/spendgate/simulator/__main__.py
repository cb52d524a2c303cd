"""``python -m spendgate.simulator --port 8780``: serve the simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from .options import SimulatorOptions
from .server import Simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spendgate.simulator",
        description="Fake OpenAI/Anthropic upstream for tests, benchmarks and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a key")
    parser.add_argument("--first-byte-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--no-records", action="store_true", help="keep no request records")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default event loop")
    return parser


def _run(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    """Run on uvloop when it is installed (less simulator overhead in benchmarks)."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def _serve(args: argparse.Namespace) -> None:
    options = SimulatorOptions(
        require_auth=not args.no_auth,
        first_byte_delay_ms=args.first_byte_delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        record_requests=not args.no_records,
    )
    async with Simulator(options, host=args.host, port=args.port) as simulator:
        print(f"spendgate simulator on {simulator.url}", flush=True)
        print(f"  OpenAI base URL:    {simulator.openai_base_url}", flush=True)
        print(f"  Anthropic base URL: {simulator.anthropic_base_url}", flush=True)
        await asyncio.Event().wait()


def _interruptible() -> None:
    """Ctrl-C (SIGINT) stops the simulator whatever it inherited: a parent that ignored or
    blocked SIGINT passes that on through exec, and Python then installs no handler."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    _interruptible()
    with contextlib.suppress(KeyboardInterrupt):
        _run(_serve(args), use_uvloop=not args.no_uvloop)


if __name__ == "__main__":
    main()
