"""Copy a zarr v2 store into a sharded one (or back), shard by shard, resumably.

What is copied: every group's ``.zgroup``/``.zattrs``, every array's ``.zarray``/
``.zattrs`` and chunks, and consolidated ``.zmetadata`` (translated for the new
sharding). Chunks are copied as their encoded bytes -- never decoded, never
re-compressed -- since sharding changes how chunks are grouped, not the chunks.

Bounded memory
    The work is cut into *units*, each written with one request: a destination
    shard (when the destination array is sharded), a source shard (when unsharding),
    or a batch of :data:`BATCH` chunks (plain to plain). For each unit, only the
    source chunks it needs are read (one ``getitems``), the unit is assembled and
    written whole -- a shard is never read back and modified. Peak memory is about
    two units (the chunks read, then the assembled shard) per worker thread, plus
    the coordinates of the present chunks (8 bytes per dimension and chunk), whatever
    the array size. The units themselves are in :mod:`shardedstore.tools.copy`.

Resuming (``resume=True``, the default)
    The first object written to the (empty) destination is the progress marker
    :data:`MARKER_KEY`, holding the options and, per array, the chunks per shard it
    gets and the ``.zarray`` it will have; then comes the data, array by array; after
    each array, its path is added to the marker's ``done`` list. The metadata
    (``.zarray``, ``.zattrs``, ``.zgroup``, the root ``.zgroup`` and ``.zmetadata``
    last) is *published* only once every array is complete, and then the marker is
    deleted. So an unfinished destination holds no zarr metadata written by this
    version before its data is complete: zarr, xarray, zarr-python 3 and this store
    find no array or group there instead of reading fill values; ``verify`` reports
    it as an error ("run it again") and checks its shards with the layouts in the
    marker. A destination holding the marker is an unfinished conversion, and one
    without it is complete (or was never started).
    A re-run with the same options (others are refused) skips ``done`` arrays,
    (re)publishes the metadata at the end (idempotent), and for the others skips
    every unit that is already complete: a shard whose index decodes (CRC32C,
    bounds) and lists exactly the chunks the source has, or a chunk object as long
    as the source chunk. A unit cut short by a kill is therefore rewritten:
    ``DirectoryStore`` writes to a temporary file and renames it, object stores
    replace whole objects, and on non-atomic file systems a torn shard fails its
    index checksum. Temporary files of the interrupted run are deleted.
    ``ZipStore`` destinations cannot delete keys, so they get no marker and no
    resume (their metadata is still written last).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import zarr.storage
from numcodecs.compat import ensure_bytes
from tqdm import tqdm

from shardedstore.errors import ConvertError
from shardedstore.format.documents import dumps_json
from shardedstore.format.keys import (
    ARRAY_META_KEY,
    ATTRS_KEY,
    CONSOLIDATED_KEY,
    GROUP_META_KEY,
    join_path,
)
from shardedstore.format.layout import (
    ArrayLayout,
    ChunksPerShard,
    normalize_chunk_shards,
    resolve_chunks_per_shard,
)
from shardedstore.format.metadata import layout_from_stored
from shardedstore.sharding.listing import is_temp_name
from shardedstore.sharding.view import ShardView
from shardedstore.tools.copy import remove_temp, units_of, write_chunks, write_shard
from shardedstore.tools.walk import MARKER_KEY, base_of, read_json, walk_nodes

__all__ = ["MARKER_VERSION", "ConvertReport", "convert"]

#: progress marker of an unfinished conversion, at the destination's root
MARKER_VERSION: Final = 1


@dataclass
class ConvertReport:
    """What :func:`convert` did."""

    arrays: list[str] = field(default_factory=list)
    sharded: list[str] = field(default_factory=list)
    groups: int = 0
    resumed: bool = False
    arrays_skipped: list[str] = field(default_factory=list)  # done by an earlier run
    objects_written: int = 0
    objects_skipped: int = 0  # complete already (resume)
    chunks_copied: int = 0
    bytes_written: int = 0
    temp_removed: int = 0  # temporary files of the interrupted run (resume)

    def summary(self) -> str:
        """Return one human-readable line."""
        text = (
            f"{len(self.arrays)} arrays ({len(self.sharded)} sharded), {self.groups} groups: "
            f"{self.objects_written} objects written ({self.chunks_copied} chunks, "
            f"{self.bytes_written} bytes)"
        )
        if self.resumed:
            text += (
                f"; resumed: {len(self.arrays_skipped)} arrays and "
                f"{self.objects_skipped} objects were complete"
            )
        return text


@dataclass(frozen=True)
class _Plan:
    path: str
    src: ArrayLayout
    cps: tuple[int, ...] | None  # chunks per shard in the destination


# -- planning ------------------------------------------------------------------------------
def _rules(
    chunks_per_shard: ChunksPerShard | Mapping[str, ChunksPerShard] | None, unshard: bool
) -> dict[str, ChunksPerShard]:
    if unshard and chunks_per_shard is not None:
        raise ValueError("unshard=True takes no chunks_per_shard")
    if chunks_per_shard is None:
        return {}
    if isinstance(chunks_per_shard, Mapping):
        return normalize_chunk_shards(chunks_per_shard)
    return normalize_chunk_shards({"*": chunks_per_shard})


def _target_cps(
    rules: Mapping[str, ChunksPerShard], layout: ArrayLayout, unshard: bool
) -> tuple[int, ...] | None:
    if unshard:
        return None
    if layout.ndim == 0 and layout.path not in rules:
        return layout.chunks_per_shard  # "*" never shards a 0-d array
    cps = resolve_chunks_per_shard(rules, layout.path, layout.ndim)
    return layout.chunks_per_shard if cps is None else cps


def _plan(
    src: ShardView, rules: Mapping[str, ChunksPerShard], unshard: bool
) -> tuple[list[_Plan], list[str]]:
    plans: list[_Plan] = []
    groups: list[str] = []
    for path, is_array in walk_nodes(src.base):
        if not is_array:
            groups.append(path)
            continue
        layout = src.layout(path, fresh=True)
        if layout is None:
            raise ConvertError(f"source array {path!r} has an unreadable .zarray")
        plans.append(_Plan(path, layout, _target_cps(rules, layout, unshard)))
    if not plans and not groups:
        raise ConvertError("the source holds no zarr array or group")
    missing = sorted(set(rules) - {"*"} - {p.path for p in plans})
    if missing:
        raise ConvertError(
            f"chunks per shard given for {missing}, which the source has no array at"
        )
    return plans, groups


# -- the progress marker -------------------------------------------------------------------
def _marker_doc(
    plans: list[_Plan], unshard: bool, staged: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "shardedstore_convert": MARKER_VERSION,
        "unshard": unshard,
        "arrays": {p.path: None if p.cps is None else list(p.cps) for p in plans},
        "zarrays": staged,  # published at the end; verify reads the shards with them
        "done": [],
    }


def _has_content(base: Any) -> bool:
    return any(not is_temp_name(name) for name in zarr.storage.listdir(base, ""))


def _start(dst: Any, wanted: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Check the destination, write the marker; return the marker of a run to resume."""
    try:
        marker = read_json(dst, MARKER_KEY)
    except (ValueError, TypeError) as err:
        raise ConvertError(f"the destination's {MARKER_KEY} is unreadable: {err}") from err
    if marker is not None and resume:
        done = marker.get("done")
        if {k: marker.get(k) for k in ("shardedstore_convert", "unshard", "arrays")} != {
            k: wanted[k] for k in ("shardedstore_convert", "unshard", "arrays")
        } or not isinstance(done, list):
            raise ConvertError(
                "the destination holds an unfinished conversion with other options "
                f"({json.dumps(marker.get('arrays'))}); re-run it with the same options, "
                "or start over (--no-resume)"
            )
        return marker
    if marker is not None:
        zarr.storage.rmdir(dst, "")  # everything there was written by the unfinished run
    elif _has_content(dst):
        raise ConvertError("the destination is not empty (and holds no unfinished conversion)")
    if not isinstance(dst, zarr.storage.ZipStore):
        dst[MARKER_KEY] = dumps_json(wanted)
    return None


# -- metadata ------------------------------------------------------------------------------
def _logical_meta(src: ShardView, plan: _Plan, dst_separator: str) -> dict[str, Any]:
    meta = json.loads(ensure_bytes(src.presented(join_path(plan.path, ARRAY_META_KEY))))
    if not isinstance(meta, dict):
        raise ConvertError(f"source array {plan.path!r} has an unreadable .zarray")
    if meta.get("dimension_separator") is None and plan.src.separator != dst_separator:
        meta["dimension_separator"] = plan.src.separator  # the base stores' defaults differ
    return meta


def _stage_arrays(src: ShardView, dst: ShardView, plans: list[_Plan]) -> dict[str, dict[str, Any]]:
    """Return the stored ``.zarray`` each array gets in ``dst``, by path; write nothing.

    The destination store translates the source's logical ``.zarray`` exactly as it
    would on a write (chunks per shard from its ``chunk_shards``).
    """
    staged: dict[str, dict[str, Any]] = {}
    separator = _separator(dst)
    for plan in plans:
        key = join_path(plan.path, ARRAY_META_KEY)
        logical = dumps_json(_logical_meta(src, plan, separator))
        staged[plan.path] = json.loads(ensure_bytes(dst.stored_meta(key, logical)))
    return staged


def _separator(dst: ShardView) -> str:
    return getattr(dst.base, "_dimension_separator", None) or "."


def _publish(
    src: ShardView,
    dst_base: Any,
    staged: dict[str, dict[str, Any]],
    groups: list[str],
) -> None:
    """Write every metadata document to ``dst_base``: arrays, then groups (root last)."""
    for path, stored in staged.items():
        _copy_key(src, dst_base, join_path(path, ATTRS_KEY))
        dst_base[join_path(path, ARRAY_META_KEY)] = dumps_json(stored)
    for group in sorted(groups, key=lambda g: (-g.count("/") - bool(g), g)):
        _copy_key(src, dst_base, join_path(group, ATTRS_KEY))
        _copy_key(src, dst_base, join_path(group, GROUP_META_KEY))
    _copy_consolidated(src, dst_base, staged)


def _copy_key(src: ShardView, dst_base: Any, key: str) -> None:
    try:
        dst_base[key] = src.presented(key)
    except KeyError:
        return


def _copy_consolidated(src: ShardView, dst_base: Any, staged: dict[str, dict[str, Any]]) -> None:
    try:
        doc = json.loads(ensure_bytes(src.presented(CONSOLIDATED_KEY)))
    except KeyError:
        return
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    if isinstance(metadata, dict):
        for path, stored in staged.items():
            key = join_path(path, ARRAY_META_KEY)
            if key in metadata:
                metadata[key] = stored  # what the destination's .zarray says
    dst_base[CONSOLIDATED_KEY] = dumps_json(doc)


@dataclass(frozen=True)
class _Run:
    src: ShardView
    dst: ShardView
    report: ConvertReport
    check: bool  # skip complete units (resuming)
    bar: Any  # the current array's progress bar (tqdm), reset per array
    workers: int


def _account(report: ConvertReport, bar: Any, done: Iterable[Future[tuple[int, ...]]]) -> None:
    for future in done:
        objects, skipped, chunks, nbytes = future.result()
        report.objects_written += objects
        report.objects_skipped += skipped
        report.chunks_copied += chunks
        report.bytes_written += nbytes
        bar.update()


def _copy_array(run: _Run, plan: _Plan, stored: dict[str, Any]) -> None:
    """Copy one array's chunks, at most ``run.workers`` units in flight."""
    dst_layout = layout_from_stored(stored, plan.path, _separator(run.dst))
    write = partial(
        write_shard if dst_layout.sharded else write_chunks,
        run.src,
        run.dst,
        (plan.src, dst_layout),
        check=run.check,
    )
    bar = run.bar
    bar.set_description(plan.path or "/")  # listing the source's chunks can take a while
    units = units_of(run.src, plan.src, dst_layout)
    bar.unit = "shard" if dst_layout.sharded or plan.src.sharded else "batch"
    bar.reset(total=len(units))
    with ThreadPoolExecutor(run.workers, thread_name_prefix="convert") as pool:
        pending: set[Future[tuple[int, ...]]] = set()
        for item in units:
            if len(pending) >= run.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                _account(run.report, bar, done)
            pending.add(pool.submit(write, item))
        _account(run.report, bar, pending)


def _bars(n_arrays: int, progress: bool) -> tuple[Any, Any]:
    """Return the two progress bars: arrays done, and the current array's units."""
    options: dict[str, Any] = {"disable": not progress, "file": sys.stderr}
    overall = tqdm(total=n_arrays, desc="arrays", unit="array", position=0, **options)
    current = tqdm(total=0, desc="listing", unit="shard", position=1, leave=False, **options)
    return overall, current


# -- the entry point -----------------------------------------------------------------------
def convert(
    src_store: Any,
    dst_store: Any,
    chunks_per_shard: ChunksPerShard | Mapping[str, ChunksPerShard] | None = None,
    *,
    unshard: bool = False,
    progress: bool = False,
    resume: bool = True,
    workers: int = 1,
) -> ConvertReport:
    """Copy ``src_store`` to ``dst_store``, sharding (or unsharding) its arrays.

    Parameters
    ----------
    src_store, dst_store
        Zarr v2 stores (base stores or :class:`~shardedstore.ShardedStore` wrappers of
        one base store). The source may be sharded or not. The destination must be
        empty, or hold an unfinished conversion (see the module documentation).
    chunks_per_shard
        An int or tuple for every array of matching dimensionality (as ``chunk_shards["*"]``),
        or a mapping ``{"*" or array path: chunks per shard}``. Arrays it gives nothing keep
        the source's sharding (none for plain arrays).
    unshard
        Write every array unsharded (plain chunks); takes no ``chunks_per_shard``.
    progress
        Show progress on stderr (tqdm): one bar for the arrays, one for the
        shards (or batches) of the array being copied.
    resume
        Continue an unfinished conversion into ``dst_store``; ``False`` starts over.
    workers
        Units (shards) copied concurrently, by threads: more overlap latency (object
        stores, slow file creation); peak memory is about two units per worker.

    Returns
    -------
    ConvertReport

    Raises
    ------
    ConvertError
        If the destination is not empty, holds a conversion with other options, or a
        source shard is corrupt.
    ShardingConfigError
        If ``chunks_per_shard`` does not fit an array it names.

    Examples
    --------
    >>> import zarr
    >>> src = zarr.storage.MemoryStore()
    >>> zarr.array(range(100), chunks=10, store=src, path="x")[:5]
    array([0, 1, 2, 3, 4])
    >>> dst = zarr.storage.MemoryStore()
    >>> convert(src, dst, 4).summary()
    '1 arrays (1 sharded), 1 groups: 3 objects written (10 chunks, 1164 bytes)'
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    src_base, dst_base = base_of(src_store), base_of(dst_store)
    src = ShardView(src_base)
    plans, groups = _plan(src, _rules(chunks_per_shard, unshard), unshard)
    dst = ShardView(dst_base, {p.path: p.cps for p in plans if p.cps is not None})
    staged = _stage_arrays(src, dst, plans)
    progress_doc = _marker_doc(plans, unshard, staged)
    marker = _start(dst_base, progress_doc, resume)
    report = ConvertReport(
        arrays=[p.path for p in plans],
        sharded=[p.path for p in plans if p.cps is not None],
        groups=len(groups),
        resumed=marker is not None,
    )
    if marker is not None:
        report.temp_removed = remove_temp(dst)
        progress_doc["done"] = marker["done"]
    overall, current = _bars(len(plans), progress)
    with overall, current:
        run = _Run(src, dst, report, marker is not None, current, workers)
        for plan in plans:
            if plan.path in progress_doc["done"]:
                report.arrays_skipped.append(plan.path)
            else:
                _copy_array(run, plan, staged[plan.path])
                progress_doc["done"].append(plan.path)
                if MARKER_KEY in dst_base:
                    dst_base[MARKER_KEY] = dumps_json(progress_doc)
            overall.update()
    _publish(src, dst_base, staged, groups)
    if MARKER_KEY in dst_base:
        del dst_base[MARKER_KEY]
    return report
