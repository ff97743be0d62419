"""JSON documents: zarr 2's serialisation, and reading that never raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from numcodecs.compat import ensure_bytes

__all__ = ["dumps_json", "load_json", "parse_or_none"]


def dumps_json(meta: Mapping[str, Any]) -> bytes:
    """Serialise metadata the way zarr 2 does (sorted keys, indent 4, ASCII)."""
    return json.dumps(
        meta, indent=4, sort_keys=True, ensure_ascii=True, separators=(",", ": ")
    ).encode("ascii")


def load_json(store: Mapping[str, Any], key: str) -> Any:
    """Return the JSON document at ``key`` of ``store``, ``None`` if absent (raises if not JSON)."""
    try:
        raw = store[key]
    except KeyError:
        return None
    return json.loads(ensure_bytes(raw).decode("utf-8"))


def parse_or_none(raw: Any) -> Any:
    """Return the JSON document ``raw`` holds, ``None`` if it holds none."""
    try:
        return json.loads(ensure_bytes(raw).decode("utf-8"))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
