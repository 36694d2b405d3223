"""``python -m benchmarks``: run the benchmark figures (see ``--help``)."""

from benchmarks.run import main

raise SystemExit(main())
