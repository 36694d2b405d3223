"""Command line entry point: ``python -m gemini_batch_magic.emulator`` (and ``gembatch emulator``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from ._config import EmulatorConfig, is_loopback_host
from ._emulator import Emulator

DEFAULT_CLI_PENDING_SECONDS = 2.0


def _build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m gemini_batch_magic.emulator",
        allow_abbrev=False,  # --fail would silently mean --fail-rate or --fail-batch-rate
        description=(
            "Run a local emulator of the Gemini Batch API and File API. The first line "
            "printed on stdout is the base URL; point the SDK at it with "
            "HttpOptions(base_url=URL). Stop it with Ctrl+C or SIGTERM."
        ),
    )
    p.add_argument(
        "--host",
        default=None,
        help="address to bind (default 127.0.0.1). A non-loopback address is used only when "
        "named here explicitly, and exposes the emulator (which has no real authentication) "
        "to that network",
    )
    p.add_argument("--port", type=int, default=0, help="port (default 0 = any free port)")
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
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="worker processes that answer requests, so API calls stay fast while big "
        "batches are answered (default: one per CPU, at most 4; 0 = answer in the "
        "emulator's own threads). Results are identical either way",
    )
    p.add_argument("--quiet", action="store_true", help="print only the URL")
    return p


def emu_host(args: argparse.Namespace) -> str:
    return str(args.host or "127.0.0.1")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The configuration the parsed command line asks for (``ValueError`` if it is bad)."""
    return EmulatorConfig(
        pending_seconds=args.pending_seconds,
        rate=args.rate,
        fail_rate=args.fail_rate,
        seed=args.seed,
        http_fault_rate=args.http_fault_rate,
        drop_after_create_rate=args.drop_after_create_rate,
        data_dir=args.data_dir,
        host=emu_host(args),
        port=args.port,
        shuffle=not args.no_shuffle,
        api_key=args.api_key,
        expire_after=args.expire_after,
        processes=args.processes,
        # only an explicit --host may name a non-loopback address
        allow_remote=args.host is not None,
    )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Runs the emulator until SIGINT/SIGTERM and returns the exit code.

    ``argv`` defaults to ``sys.argv[1:]``; ``prog`` is the command name shown in help and
    error messages (e.g. ``"gembatch emulator"``). Exit codes: 0 after a clean stop, 1 when
    the address cannot be bound, 2 for invalid options (including a refused host).
    """
    parser = _build_parser(prog)
    args = parser.parse_args(argv)
    try:
        emu = Emulator(config_from_args(args))
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
                f"{parser.prog}: error: cannot start on {emu_host(args)}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        print(emu.url, flush=True)
        if args.host is not None and not is_loopback_host(args.host):
            print(
                f"{parser.prog}: warning: listening on non-loopback {args.host!r}: anyone who "
                "can reach it can use this emulator",
                file=sys.stderr,
                flush=True,
            )
        if not args.quiet:
            where = args.data_dir or "a temporary directory (deleted on exit)"
            print(
                f"Gemini Batch API emulator listening on {emu.url}; data in {where}. "
                "Press Ctrl+C to stop.",
                file=sys.stderr,
                flush=True,
            )
        try:
            while not stop.wait(0.2):
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
