"""``python -m bench``: runs the benchmark (see :mod:`bench.run`)."""

from bench.run import main

raise SystemExit(main())
