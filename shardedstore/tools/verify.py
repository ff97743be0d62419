"""Check a store's shards and chunks, collecting every problem instead of raising.

For every array under a path: its ``.zarray`` parses and names available codecs;
every shard object's index has the right size and CRC32C, and its entries lie in
the data region without overlapping; every chunk of an array with chunk checksums
matches its CRC32C (checked even with ``decode=False``); every chunk (in a shard or a plain chunk
object) decodes with the array's compressor and filters to exactly one chunk's
worth of data. Also reported: consolidated metadata that disagrees with a
``.zarray`` and a Zarr v3 ``zarr.json`` that disagrees with the v2 metadata beside
it (errors: readers would use the wrong layout), shards or chunks
outside the array (warnings: left over from a resize, invisible to readers),
leftover ``DirectoryStore`` temporary files and the torn tails of interrupted appends
(warnings: an interrupted write; readers ignore them, nothing was lost, they only take
space).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr.storage
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray_like

from shardedstore.errors import ShardCorruptionError, ShardedStoreError
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    CONSOLIDATED_KEY,
    GROUP_META_KEY,
    format_chunk_key,
    join_path,
)
from shardedstore.format.layout import ArrayLayout
from shardedstore.format.metadata import layout_from_stored, to_logical
from shardedstore.format.v3 import V3_META_KEY, v3_disagreement
from shardedstore.io.base import chunk_in, split_whole
from shardedstore.sharding.view import ShardView
from shardedstore.tools.walk import MARKER_KEY, base_of, read_json, stored_objects, walk_nodes

__all__ = ["Problem", "Severity", "VerifyReport", "verify"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding: the store key concerned, what is wrong, and how bad it is."""

    key: str
    reason: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{self.key}: {self.reason}"


@dataclass
class VerifyReport:
    """The result of :func:`verify`."""

    problems: list[Problem] = field(default_factory=list)
    arrays: list[str] = field(default_factory=list)
    shards_checked: int = 0
    chunks_checked: int = 0  # chunks found (decoded or, with decode=False, only located)
    chunks_decoded: int = 0

    @property
    def ok(self) -> bool:
        """``True`` if there is no error (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def add(self, key: str, reason: str, severity: Severity = "error") -> None:
        self.problems.append(Problem(key, reason, severity))

    def summary(self) -> str:
        """Return one human-readable line."""
        return (
            f"{len(self.arrays)} arrays, {self.shards_checked} shards, "
            f"{self.chunks_decoded} chunks decoded: {len(self.errors)} errors, "
            f"{len(self.warnings)} warnings"
        )


@dataclass(frozen=True)
class _Codecs:
    compressor: Codec | None
    filters: list[Codec]
    dtype: np.dtype[Any]
    nitems: int  # elements in one chunk

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> _Codecs:
        compressor = meta.get("compressor")
        filters = meta.get("filters") or []
        return cls(
            None if compressor is None else numcodecs.get_codec(compressor),
            [numcodecs.get_codec(f) for f in filters],
            np.dtype(_dtype_spec(meta["dtype"])),
            math.prod(meta["chunks"]),
        )

    def problem(self, data: bytes) -> str | None:
        """Return why ``data`` does not decode to one chunk, or ``None`` if it does."""
        try:
            buf: Any = data
            if self.compressor is not None:
                buf = self.compressor.decode(buf)
            for codec in reversed(self.filters):
                buf = codec.decode(buf)
            arr = ensure_ndarray_like(buf)
        except Exception as err:  # noqa: BLE001  # any codec failure is a finding, not a crash
            return f"does not decode: {type(err).__name__}: {err}"
        if self.dtype.hasobject:
            if arr.size != self.nitems:
                return f"decodes to {arr.size} items, expected {self.nitems}"
        elif arr.nbytes != self.nitems * self.dtype.itemsize:
            expected = self.nitems * self.dtype.itemsize
            return f"decodes to {arr.nbytes} bytes, expected {expected}"
        return None


def _dtype_spec(value: Any) -> Any:
    # structured dtypes are stored as lists of [name, type(, shape)] lists
    return [tuple(f) for f in value] if isinstance(value, list) else value


def _load_array(
    view: ShardView, path: str, report: VerifyReport
) -> tuple[ArrayLayout, _Codecs] | None:
    key = join_path(path, ARRAY_META_KEY)
    try:
        layout = view.layout(path, fresh=True)
        meta = json.loads(ensure_bytes(view.presented(key)))
        if layout is None or not isinstance(meta, dict):
            raise ValueError("not an array description")
        return layout, _Codecs.from_meta(meta)
    except (ShardedStoreError, ValueError, TypeError, KeyError, OSError) as err:
        report.add(key, f"unreadable array metadata: {err}")
        return None


def _check_chunk(
    report: VerifyReport, key: str, data: bytes, codecs: _Codecs | None, what: str = ""
) -> None:
    report.chunks_checked += 1
    if codecs is None:
        return
    report.chunks_decoded += 1
    reason = codecs.problem(data)
    if reason is not None:
        report.add(key, f"{what}{reason}")


def _check_shard(
    view: ShardView,
    layout: ArrayLayout,
    shard: tuple[int, ...],
    key: str,
    codecs: _Codecs | None,
    report: VerifyReport,
) -> None:
    report.shards_checked += 1
    data = view.io.read_whole(key)
    if data is None:
        return  # deleted since it was listed
    try:
        index = split_whole(layout, key, data)
    except ShardCorruptionError as err:
        report.add(key, err.reason)
        return
    if view.io.can_append:
        _check_tail(view, key, len(data), report)
    outside = 0
    for slot in index.present().nonzero()[0].tolist():
        coords = layout.chunk_coords_of(shard, slot)
        if not layout.in_bounds(coords):
            outside += 1
            continue
        offset, nbytes = index.entries[slot].tolist()
        try:
            chunk = chunk_in(layout, key, slot, data, offset, nbytes)
        except ShardCorruptionError as err:
            report.chunks_checked += 1
            report.add(key, err.reason)
            continue
        chunk_key = format_chunk_key(layout.path, coords, layout.separator)
        _check_chunk(report, key, chunk, codecs, f"chunk {chunk_key}: ")
    if outside:
        report.add(key, f"{outside} chunks lie outside the array (ignored by readers)", "warning")


def _check_tail(view: ShardView, key: str, complete: int, report: VerifyReport) -> None:
    """Warn about the torn tail of an interrupted append past the ``complete`` bytes."""
    size = int(zarr.storage.getsize(view.base, key))
    if size > complete:
        report.add(
            key,
            f"{size - complete} bytes of an interrupted append follow its last complete "
            "version (read as that version; the next write to the shard or `shardedstore "
            "compact` cuts them; Zarr v3 readers fail on the shard until then)",
            "warning",
        )


def _check_array(
    view: ShardView, path: str, decode: bool, report: VerifyReport, temp: list[str]
) -> None:
    loaded = _load_array(view, path, report)
    if loaded is not None:
        _check_objects(view, *loaded, decode, report, temp)


def _check_objects(
    view: ShardView,
    layout: ArrayLayout,
    codecs: _Codecs,
    decode: bool,
    report: VerifyReport,
    temp: list[str],
) -> None:
    report.arrays.append(layout.path)
    for coords, key in stored_objects(view.base, layout, temp):
        try:
            if layout.sharded:
                _check_shard(view, layout, coords, key, codecs if decode else None, report)
                continue
            data = view.io.read_whole(key)
        except OSError as err:
            report.add(key, f"cannot be read: {err}")
            continue
        if data is None:
            continue
        if not layout.in_bounds(coords):
            report.add(key, "chunk lies outside the array (ignored by readers)", "warning")
            continue
        _check_chunk(report, key, data, codecs if decode else None)


def _consolidated_problems(base: Any, path: str) -> Iterator[Problem]:
    key = join_path(path, CONSOLIDATED_KEY)
    try:
        doc = read_json(base, key)
    except (ValueError, TypeError) as err:
        yield Problem(key, f"unreadable consolidated metadata: {err}")
        return
    metadata = None if doc is None else doc.get("metadata")
    if not isinstance(metadata, dict):
        if doc is not None:
            yield Problem(key, "consolidated metadata has no 'metadata' object")
        return
    for name, entry in sorted(metadata.items()):
        if not name.endswith(ARRAY_META_KEY):
            continue
        try:
            actual = read_json(base, join_path(path, name))
        except (ValueError, TypeError):
            continue  # reported with the array
        if actual is None:
            yield Problem(key, f"describes {name}, which does not exist", "warning")
        elif actual != entry:
            yield Problem(key, f"its entry for {name} differs from {name} itself")


def _unfinished_convert(base: Any, path: str) -> tuple[str, dict[str, Any]] | None:
    """Return the key and document of a convert progress marker at ``path``, if any."""
    key = join_path(path, MARKER_KEY)
    try:
        return None if key not in base else (key, read_json(base, key) or {})
    except (OSError, ValueError, TypeError):
        return key, {}


def _check_unpublished(
    view: ShardView,
    marker: tuple[str, dict[str, Any]],
    path: str,
    decode: bool,
    report: VerifyReport,
    temp: list[str],
) -> None:
    """Check the shards an unfinished conversion wrote for arrays it has not published yet."""
    key, doc = marker
    staged = doc.get("zarrays")
    for name, stored in sorted(staged.items()) if isinstance(staged, dict) else []:
        node = join_path(path, name)
        if join_path(node, ARRAY_META_KEY) in view.base:
            continue  # published: checked with the others
        try:
            layout = layout_from_stored(stored, node, view.layouts.default_separator)
            logical = to_logical(stored, node)[0] if layout.sharded else stored
            codecs = _Codecs.from_meta(logical)
        except (ShardedStoreError, ValueError, TypeError, KeyError) as err:
            report.add(key, f"unreadable layout of {name!r}: {err}")
            continue
        _check_objects(view, layout, codecs, decode, report, temp)


def _verify_base(base: Any, path: str, decode: bool, report: VerifyReport) -> None:
    view = ShardView(base)
    temp: list[str] = []
    found = False
    for node, is_array in walk_nodes(base, path, temp):
        found = True
        if is_array:
            _check_array(view, node, decode, report, temp)
        v2 = any(join_path(node, n) in base for n in (ARRAY_META_KEY, GROUP_META_KEY))
        stale = v3_disagreement(base, node, is_array) if v2 else None  # v3-only: no v2 twin
        if stale is not None:
            report.add(join_path(node, V3_META_KEY), stale)
    unfinished = _unfinished_convert(base, path)
    if unfinished is not None:
        report.add(
            unfinished[0],
            "an interrupted `shardedstore convert` is writing here; its arrays are "
            "incomplete until it finishes: run it again",
        )
        _check_unpublished(view, unfinished, path, decode, report, temp)
    if not found and unfinished is None:
        report.add(path or "/", "no zarr array or group here")
    report.problems.extend(_consolidated_problems(base, path))
    for key in sorted(set(temp)):
        report.add(key, "leftover temporary file of an interrupted write", "warning")


def verify(store_or_base: Any, path: str = "", *, decode: bool = True) -> VerifyReport:
    """Check every shard and chunk under ``path``; never raise on corrupt data.

    Parameters
    ----------
    store_or_base
        A base store or a :class:`~shardedstore.ShardedStore` (each component store of
        one with mounts or array splits is checked, keys prefixed by its label).
    path
        The subtree to check; ``""`` checks the whole store.
    decode
        Also decode every chunk with its array's codecs (``False``: indexes only).

    Returns
    -------
    VerifyReport
        ``.ok`` is false if any error was found; ``.problems`` lists errors and warnings.

    Raises
    ------
    OSError
        If the store cannot be listed at all.

    Examples
    --------
    >>> import zarr
    >>> from shardedstore import ShardedStore
    >>> base = zarr.storage.MemoryStore()
    >>> store = ShardedStore(base, chunk_shards={"*": 2})
    >>> zarr.array(range(64), chunks=4, store=store).nchunks_initialized
    16
    >>> verify(base).ok, verify(base).shards_checked
    (True, 8)
    >>> base["0"] = base["0"][:-1]  # truncate a shard
    >>> print(verify(base).problems[0])  # doctest: +ELLIPSIS
    0: index checksum is 0x..., computed 0x...
    """
    report = VerifyReport()
    components = getattr(store_or_base, "components", None)
    parts = components() if components is not None else {"": store_or_base}
    for label, part in parts.items():
        sub = VerifyReport()
        _verify_base(base_of(part), path, decode, sub)
        report.arrays += [join_path(label, a) for a in sub.arrays]
        report.problems += [
            Problem(join_path(label, p.key), p.reason, p.severity) for p in sub.problems
        ]
        report.shards_checked += sub.shards_checked
        report.chunks_checked += sub.chunks_checked
        report.chunks_decoded += sub.chunks_decoded
    return report
