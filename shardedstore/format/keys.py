"""Keys: checks, chunk-key parsing and formatting, path joining."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from shardedstore.errors import InvalidKeyError

__all__ = [
    "ARRAY_META_KEY",
    "ATTRS_KEY",
    "CONSOLIDATED_KEY",
    "GROUP_META_KEY",
    "META_KEYS",
    "ancestors",
    "check_key",
    "chunk_splits",
    "format_chunk_key",
    "join_path",
    "parse_chunk_coords",
    "split_key",
    "strip_path",
    "v3_chunk_key",
]

ARRAY_META_KEY: Final = ".zarray"
GROUP_META_KEY: Final = ".zgroup"
ATTRS_KEY: Final = ".zattrs"
CONSOLIDATED_KEY: Final = ".zmetadata"
META_KEYS: Final = frozenset({ARRAY_META_KEY, GROUP_META_KEY, ATTRS_KEY})


def check_key(key: str) -> str:
    """Return ``key`` if it stays inside the store, else raise :class:`InvalidKeyError`.

    >>> check_key("group/array/0.1")
    'group/array/0.1'
    >>> check_key("../etc/passwd")
    Traceback (most recent call last):
    ...
    shardedstore.errors.InvalidKeyError: invalid key '../etc/passwd': '..' segments leave the store
    """
    if not isinstance(key, str):
        raise InvalidKeyError(repr(key), f"keys must be str, got {type(key).__name__}")
    if "\x00" in key:
        raise InvalidKeyError(key, "NUL characters are not allowed")
    if "\\" in key:
        raise InvalidKeyError(key, "backslashes are not allowed")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise InvalidKeyError(key, "absolute paths are not allowed")
    for segment in key.split("/"):
        if segment in ("..", "."):
            raise InvalidKeyError(key, f"{segment!r} segments leave the store")
    return key


def split_key(key: str) -> tuple[str, str]:
    """Split ``key`` into ``(parent path, last segment)``.

    >>> split_key("a/b/.zarray")
    ('a/b', '.zarray')
    >>> split_key("0.0")
    ('', '0.0')
    """
    parent, _, name = key.rpartition("/")
    return parent, name


def parse_chunk_coords(tail: str, ndim: int, separator: str) -> tuple[int, ...] | None:
    """Parse the part of a key after its array path as chunk coordinates.

    Returns ``None`` when ``tail`` is not a canonical chunk key of an ``ndim``-dimensional
    array with ``separator`` (a 0-d array's only chunk key is ``"0"``).

    >>> parse_chunk_coords("3.0.12", 3, ".")
    (3, 0, 12)
    >>> parse_chunk_coords("3/0/12", 3, "/")
    (3, 0, 12)
    >>> parse_chunk_coords("0", 0, ".") == ()
    True
    >>> parse_chunk_coords("03.1", 2, ".") is None
    True
    """
    if ndim == 0:
        return () if tail == "0" else None
    parts = tail.split(separator)
    if len(parts) != ndim:
        return None
    for part in parts:
        # canonical non-negative decimal only: "01", "+1", " 1", "1_0" are not chunk indices
        if not (part.isascii() and part.isdigit()) or (part[0] == "0" and len(part) > 1):
            return None
    return tuple(map(int, parts))


def format_chunk_key(array_path: str, coords: tuple[int, ...], separator: str) -> str:
    """Return the key of the chunk (or shard) at ``coords``.

    >>> format_chunk_key("g/a", (1, 2), "/")
    'g/a/1/2'
    >>> format_chunk_key("", (), ".")
    '0'
    """
    name = separator.join(map(str, coords)) if coords else "0"
    return f"{array_path}/{name}" if array_path else name


def join_path(path: str, name: str) -> str:
    """Join a store path and a name (``""`` is the root).

    >>> join_path("", "a"), join_path("a", "b")
    ('a', 'a/b')
    """
    return f"{path}/{name}" if path else name


def strip_path(path: str) -> str:
    """Return ``path`` without empty segments (leading, trailing or doubled ``/``).

    >>> strip_path("/a//b/"), strip_path("")
    ('a/b', '')
    """
    return "/".join(p for p in path.split("/") if p)


def ancestors(path: str) -> list[str]:
    """Return the paths above ``path``, the root ``""`` first.

    >>> ancestors("a/b/c")
    ['', 'a', 'a/b']
    """
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts))]


def chunk_splits(key: str) -> Iterator[tuple[str, str]]:
    """Yield the ``(array path, chunk tail)`` a key could be, the deepest array first.

    Walks back over the trailing segments that can belong to a chunk key (digits and
    dots) and stops at the first that cannot.

    >>> list(chunk_splits("a/b/1/2.0"))
    [('a/b/1', '2.0'), ('a/b', '1/2.0')]
    """
    segments = key.split("/")
    for i in range(len(segments) - 1, -1, -1):
        if not segments[i].replace(".", "").isdigit():
            return
        yield "/".join(segments[:i]), "/".join(segments[i:])


def v3_chunk_key(path: str, coords: tuple[int, ...], encoding: str, separator: str) -> str:
    """Return the stored key of the chunk (or shard) at ``coords`` of a Zarr v3 array.

    ``encoding`` is the v3 ``chunk_key_encoding``: ``"default"`` or ``"v2"``.

    >>> v3_chunk_key("g/a", (1, 2), "default", "/"), v3_chunk_key("a", (1, 2), "default", ".")
    ('g/a/c/1/2', 'a/c.1.2')
    >>> v3_chunk_key("a", (), "default", "/"), v3_chunk_key("a", (1, 2), "v2", ".")
    ('a/c', 'a/1.2')
    """
    if encoding != "default":
        return format_chunk_key(path, coords, separator)
    name = separator.join(["c", *map(str, coords)])
    return f"{path}/{name}" if path else name
