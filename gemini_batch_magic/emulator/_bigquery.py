"""Runs ``bqemulator`` offline: ``python -m gemini_batch_magic.emulator._bigquery --port P``.

``bqemulator`` installs DuckDB's ``spatial`` extension when it starts, a download that fails
with no network, and it has no switch for that. Only GEOGRAPHY needs the extension, so this
launcher makes that one step best effort (a cached extension is still loaded) and turns off
the other extension downloads (``enable_format_extensions=False``, which is what
``BQEMU_ENABLE_FORMAT_EXTENSIONS=false`` does); everything else is bqemulator's own server.
It runs in a process of its own (:mod:`._bed` starts it), so neither DuckDB nor bqemulator is
ever imported by the package or by the tests' process.
"""

from __future__ import annotations

import argparse
from typing import Any


def _load_spatial_if_cached(self: Any) -> None:
    """bqemulator's ``_load_spatial``, without the download: GEOGRAPHY only if cached."""
    try:
        self._connection.execute("LOAD spatial")
    except Exception:  # offline and not cached: every non-GEOGRAPHY feature still works
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="REST port on 127.0.0.1")
    parser.add_argument("--project", default="test-project", help="default project id")
    args = parser.parse_args(argv)

    from bqemulator.config import LogLevel, PersistenceMode, Settings
    from bqemulator.server import run_forever
    from bqemulator.storage import engine

    engine.DuckDBEngine._load_spatial = _load_spatial_if_cached  # type: ignore[method-assign]
    run_forever(Settings(
        persistence_mode=PersistenceMode.EPHEMERAL, rest_host="127.0.0.1", rest_port=args.port,
        grpc_host="127.0.0.1", grpc_port=0, enable_format_extensions=False,
        default_project_id=args.project, log_level=LogLevel.WARNING,
    ))


if __name__ == "__main__":
    main()
