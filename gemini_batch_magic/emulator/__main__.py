"""Command line entry point: ``python -m gemini_batch_magic.emulator`` (and ``gembatch emulator``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from ._config import (
    DEFAULT_FAIL_BATCH_MESSAGE,
    DEFAULT_FILE_QUOTA_BYTES,
    PROGRESS_MODES,
    TWO_DAYS,
    EmulatorConfig,
    is_loopback_host,
)
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
        "--max-running-seconds",
        type=float,
        default=None,
        dest="max_running_seconds",
        help="with --rate: a batch too large for that rate is answered faster, to end within "
        "this many seconds (default: no limit)",
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
        action="append",
        default=None,
        help="accept only this API key; repeat it to accept several (default: accept any "
        "non-empty key). Another key gets 400 API_KEY_INVALID, no key 403",
    )
    p.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="end",
        help="'end' (default, as the service): a running batch reports no progress until it "
        "ends; 'live': its counts advance while it runs",
    )
    p.add_argument(
        "--zero-counts",
        action="store_true",
        help="send every batchStats count, zeros included (default: zero counts are left "
        "out, as the service does)",
    )
    p.add_argument(
        "--no-key-scope",
        action="store_true",
        help="let every API key see every batch and file (default: only the key that "
        "created them, as the service)",
    )
    p.add_argument(
        "--batch-id-length",
        type=int,
        default=36,
        help="characters of a batch id (default 36, as the service: its results file "
        "files/batch-<id> is then too long for files.get; 28 or less keeps it in reach)",
    )
    p.add_argument(
        "--models",
        default=None,
        metavar="ID,ID,...",
        help="the models that exist, comma-separated (default: current Gemini text and "
        "embedding models); 'any' makes every model name exist",
    )
    p.add_argument(
        "--any-mime-type",
        action="store_true",
        help="accept uploads of any MIME type (default: JSON Lines, JSON, text and the "
        "document/image/audio/video types Gemini reads; others get 400)",
    )
    p.add_argument(
        "--file-ttl",
        type=float,
        default=TWO_DAYS,
        metavar="SECONDS",
        help=f"seconds an uploaded file lives (default {TWO_DAYS:g} = 48 h, as the service); "
        "0 = forever",
    )
    p.add_argument(
        "--results-ttl",
        type=float,
        default=TWO_DAYS,
        metavar="SECONDS",
        help=f"seconds a batch's results file lives after the batch ends (default "
        f"{TWO_DAYS:g} = 48 h); 0 = forever",
    )
    p.add_argument(
        "--file-quota-bytes",
        type=int,
        default=DEFAULT_FILE_QUOTA_BYTES,
        metavar="BYTES",
        help=f"bytes of uploaded files one key may hold, beyond which uploads get 429 "
        f"(default {DEFAULT_FILE_QUOTA_BYTES} = 20 GB, as the service); 0 = no limit",
    )
    p.add_argument(
        "--fail-batch-rate",
        type=float,
        default=0.0,
        help="fraction of new batches that end FAILED with an operation error (default 0)",
    )
    p.add_argument(
        "--fail-batch-message",
        default=DEFAULT_FAIL_BATCH_MESSAGE,
        help="the operation error message of those batches",
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


def _models_arg(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return EmulatorConfig.models
    if value.strip().lower() == "any":
        return None
    return tuple(m.strip() for m in value.split(",") if m.strip())


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The configuration the parsed command line asks for (``ValueError`` if it is bad)."""
    return EmulatorConfig(
        pending_seconds=args.pending_seconds,
        rate=args.rate,
        max_running_seconds=args.max_running_seconds,
        fail_rate=args.fail_rate,
        seed=args.seed,
        http_fault_rate=args.http_fault_rate,
        drop_after_create_rate=args.drop_after_create_rate,
        data_dir=args.data_dir,
        host=emu_host(args),
        port=args.port,
        shuffle=not args.no_shuffle,
        api_key=None if not args.api_key else (
            args.api_key[0] if len(args.api_key) == 1 else tuple(args.api_key)
        ),
        progress=args.progress,
        zero_counts=args.zero_counts,
        scope_by_key=not args.no_key_scope,
        batch_id_length=args.batch_id_length,
        models=_models_arg(args.models),
        mime_types=None if args.any_mime_type else EmulatorConfig.mime_types,
        file_ttl=args.file_ttl or None,
        results_ttl=args.results_ttl or None,
        file_quota_bytes=args.file_quota_bytes or None,
        fail_batch_rate=args.fail_batch_rate,
        fail_batch_message=args.fail_batch_message,
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
