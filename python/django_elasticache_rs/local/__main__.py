"""``python -m django_elasticache_rs.local``: see :mod:`django_elasticache_rs.local.cli`."""

from __future__ import annotations

import sys

from django_elasticache_rs.local.cli import main

if __name__ == "__main__":
    sys.exit(main())
