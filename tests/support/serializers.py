"""Serializer classes for ``OPTIONS["serializer"]`` given as a dotted path."""

from __future__ import annotations

import json
from typing import Any


class Tagged:
    """JSON with a tag in front, so that tests can tell its values from the built-in JSON's.
    Counts what it encodes and decodes (class attributes: the backend makes its own instance)."""

    dumped = 0
    loaded = 0

    def dumps(self, value: Any) -> bytes:
        Tagged.dumped += 1
        return b"tagged:" + json.dumps(value).encode()

    def loads(self, data: bytes) -> Any:
        Tagged.loaded += 1
        assert data.startswith(b"tagged:")
        return json.loads(data[len(b"tagged:") :])


class NoLoads:
    """Not a serializer: it cannot read back what it writes."""

    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()
