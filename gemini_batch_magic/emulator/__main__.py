"""Command line entry point: ``python -m gemini_batch_magic.emulator`` (and ``gembatch emulator``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from ._emulator import Emulator

DEFAULT_CLI_PENDING_SECONDS = 2.0


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gemini_batch_magic.emulator",
        description=(
            "Run a local emulator of the Gemini Batch API and File API. The first line "
            "printed on stdout is the base URL; point the SDK at it with "
            "HttpOptions(base_url=URL). Stop it with Ctrl+C or SIGTERM."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0 = any free port)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (exposes the emulator to your network)",
    )
    p.add_argument(
        "--pending-seconds",
        type=float,
        default=DEFAULT_CLI_PENDING_SECONDS,
        help=f"seconds a new batch stays PENDING (default {DEFAULT_CLI_PENDING_SECONDS:g})",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests answered per second while RUNNING (default 0 = all at once)",
    )
    p.add_argument(
        "--expire-after",
        type=float,
        default=None,
        help="seconds after which an unfinished batch becomes EXPIRED (default: never)",
    )
    p.add_argument("--fail-rate", type=float, default=0.0, help="fraction of requests that fail")
    p.add_argument("--seed", type=int, default=0, help="seed for all random choices (default 0)")
    p.add_argument(
        "--http-fault-rate",
        type=float,
        default=0.0,
        help="fraction of API calls answered 429/503 (default 0)",
    )
    p.add_argument(
        "--drop-after-create-rate",
        type=float,
        default=0.0,
        help="fraction of batch creates persisted but answered by a dropped connection",
    )
    p.add_argument("--no-shuffle", action="store_true", help="return results in submission order")
    p.add_argument(
        "--data-dir",
        default=None,
        help="persist state here (default: a temporary directory deleted on exit)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="accept only this API key (default: accept any non-empty key)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the URL")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs the emulator until SIGINT/SIGTERM. Returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        emu = Emulator(
            pending_seconds=args.pending_seconds,
            rate=args.rate,
            fail_rate=args.fail_rate,
            seed=args.seed,
            http_fault_rate=args.http_fault_rate,
            drop_after_create_rate=args.drop_after_create_rate,
            data_dir=args.data_dir,
            host=args.host,
            port=args.port,
            shuffle=not args.no_shuffle,
            api_key=args.api_key,
            expire_after=args.expire_after,
            allow_remote=args.allow_remote,
        )
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    handlers_installed = threading.current_thread() is threading.main_thread()
    previous = {}

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if handlers_installed:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        try:
            emu.start()
        except OSError as exc:
            print(
                f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        print(emu.url, flush=True)
        if not args.quiet:
            where = args.data_dir or "a temporary directory (deleted on exit)"
            print(
                f"Gemini Batch API emulator listening on {emu.url}; data in {where}. "
                "Press Ctrl+C to stop.",
                file=sys.stderr,
                flush=True,
            )
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        emu.close()
        if handlers_installed:
            for sig, h in previous.items():
                signal.signal(sig, h)


if __name__ == "__main__":
    sys.exit(main())
