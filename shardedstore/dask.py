"""Shard-aligned dask chunks: write sharded arrays from dask without read-modify-write.

A dask task that writes every chunk of the shards it touches builds those shards
from scratch: no read, no lock, no lost update, one write per shard. A task that
writes only part of a shard must read the shard, merge and write it back under a
per-shard lock; on a ``dask.distributed`` cluster that lock has to exclude the
other worker processes (:class:`~shardedstore.locks.DaskLocks`, or
:class:`~shardedstore.locks.FileLocks` when all workers share one machine). Without
such a lock the store refuses the partial write with
:class:`~shardedstore.errors.UnlockedWriteError` rather than risk losing an update.

The helpers here propose dask chunks made of whole shards:

- :func:`shard_aligned_chunks` for one array, before it exists;
- :func:`dataset_chunks_for` for an xarray dataset, by dimension name, before it is written;
- :func:`dask_chunks_for` for an array that already exists in a sharded store.

With xarray, the zarr chunks go in the ``encoding`` and the dask chunks (whole
shards) in ``Dataset.chunk``::

    zarr_chunks = {"time": 1, "lat": 90, "lon": 90}
    chunks_per_shard = {"time": 73, "lat": 2, "lon": 4}
    store = ShardedStore(base, chunk_shards={"*": (73, 2, 4)})
    aligned = ds.chunk(dataset_chunks_for(zarr_chunks, chunks_per_shard, sizes=ds.sizes))
    encoding = {name: {"chunks": (1, 90, 90)} for name in ds.data_vars}
    aligned.to_zarr(store, zarr_format=2, consolidated=True, encoding=encoding)

and to append to or overwrite regions of an existing array, chunk the dataset with
:func:`dask_chunks_for` (``ds.chunk(dict(zip(ds["v"].dims, dask_chunks_for(store, "v"))))``);
to read it, ``xr.open_zarr(store, chunks=dask_chunks_for(store, "v"))``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from numcodecs.compat import ensure_bytes

from shardedstore.format.keys import strip_path
from shardedstore.format.layout import ArrayLayout

__all__ = ["DaskChunks", "dask_chunks_for", "dataset_chunks_for", "shard_aligned_chunks"]


@runtime_checkable
class _LaidOut(Protocol):
    """A store that knows the layout of its arrays (:class:`~shardedstore.ShardedStore`)."""

    def layout(self, path: str) -> ArrayLayout | None: ...


def _per_dim(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    values: tuple[object, ...] = (value,) * ndim if isinstance(value, int) else tuple(value)
    if len(values) != ndim:
        raise ValueError(f"{name} has {len(values)} entries, expected {ndim}: {value!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be positive integers, got {value!r}")
        out.append(v)
    return tuple(out)


def shard_aligned_chunks(
    shape: Sequence[int],
    zarr_chunks: Sequence[int],
    chunks_per_shard: int | Sequence[int],
    *,
    shards_per_chunk: int | Sequence[int] = 1,
) -> tuple[int, ...]:
    """Return dask chunk sizes (in elements) that cover whole shards of an array.

    Each dask chunk spans ``shards_per_chunk`` shards along each dimension, so every
    task writes whole shards. Sizes are clipped to the array's shape: the last dask
    chunk along a dimension may be smaller, and then ends at the array's edge, where
    its edge shards are still whole.

    Parameters
    ----------
    shape
        The array's shape.
    zarr_chunks
        The zarr chunk shape (the inner chunks, ``encoding["chunks"]`` in xarray).
    chunks_per_shard
        Chunks per shard, per dimension or one int for all.
    shards_per_chunk
        How many shards each dask chunk spans, per dimension or one int for all.

    Returns
    -------
    tuple of int
        One uniform chunk size per dimension, usable as ``chunks=`` in dask.

    Raises
    ------
    ValueError
        If the sequences differ in length or hold non-positive entries.

    Examples
    --------
    >>> shard_aligned_chunks((365, 180, 360), (1, 90, 90), (73, 2, 4))
    (73, 180, 360)
    >>> shard_aligned_chunks((365, 180, 360), (1, 90, 90), (73, 1, 1), shards_per_chunk=(2, 1, 4))
    (146, 90, 360)
    """
    ndim = len(shape)
    chunks = _per_dim(tuple(zarr_chunks), ndim, "zarr_chunks")
    cps = _per_dim(chunks_per_shard, ndim, "chunks_per_shard")
    spc = _per_dim(shards_per_chunk, ndim, "shards_per_chunk")
    return tuple(
        max(1, min(size, c * n * k)) for size, c, n, k in zip(shape, chunks, cps, spc, strict=True)
    )


def dataset_chunks_for(
    zarr_chunks: Mapping[str, int],
    chunks_per_shard: Mapping[str, int],
    *,
    shards_per_chunk: int | Mapping[str, int] = 1,
    sizes: Mapping[Any, int] | None = None,
) -> dict[str, int]:
    """Return ``Dataset.chunk`` arguments, by dimension name, that cover whole shards.

    Parameters
    ----------
    zarr_chunks
        The zarr chunk size along each dimension.
    chunks_per_shard
        Chunks per shard along each dimension; a dimension missing here has 1.
    shards_per_chunk
        How many shards each dask chunk spans, one int for all dimensions or by name.
    sizes
        The dataset's dimension sizes (``ds.sizes``), to clip the chunk sizes to.

    Returns
    -------
    dict
        ``{dimension: dask chunk size}`` for every dimension of ``zarr_chunks``.

    Raises
    ------
    ValueError
        If ``chunks_per_shard`` names a dimension that ``zarr_chunks`` lacks, or an entry
        is not a positive integer.

    Examples
    --------
    >>> dataset_chunks_for({"time": 1, "lat": 90, "lon": 90}, {"time": 73, "lat": 2, "lon": 4})
    {'time': 73, 'lat': 180, 'lon': 360}
    >>> dataset_chunks_for({"time": 1, "x": 10}, {"time": 10}, sizes={"time": 4, "x": 25})
    {'time': 4, 'x': 10}
    """
    extra = set(chunks_per_shard) - set(zarr_chunks)
    if extra:
        raise ValueError(f"chunks_per_shard names dimensions without zarr chunks: {sorted(extra)}")
    dims = list(zarr_chunks)
    spc = (
        shards_per_chunk
        if isinstance(shards_per_chunk, int)
        else [shards_per_chunk.get(d, 1) for d in dims]
    )
    shape = [sizes[d] if sizes is not None and d in sizes else 2**63 - 1 for d in dims]
    aligned = shard_aligned_chunks(
        shape,
        [zarr_chunks[d] for d in dims],
        [chunks_per_shard.get(d, 1) for d in dims],
        shards_per_chunk=spc,
    )
    return dict(zip(dims, aligned, strict=True))


class DaskChunks(dict[int, int]):
    """Dask chunk sizes per dimension that xarray, dask and tuple code all accept.

    Why: ``xr.open_zarr(chunks=...)`` takes only an ``int`` or a ``dict`` (it checks
    ``isinstance(chunks, dict)`` and then reads ``chunks.get(dimension name)``), while
    ``dask.array`` takes a tuple, or a dict keyed by axis number (``from_array`` reads
    ``chunks.get(axis)``, ``rechunk`` reads ``chunks.items()``). This is that dict by
    axis, ``{0: 4, 1: 10}``, whose ``get`` and ``[]`` also take the array's dimension
    names (its ``_ARRAY_DIMENSIONS``), and which iterates, indexes, slices and compares
    like the tuple of sizes, ``(4, 10)``, for code written for a tuple.

    >>> chunks = DaskChunks((4, 10), ("time", "lat"))
    >>> chunks == (4, 10), chunks["lat"], chunks.get("time"), chunks[-1], tuple(chunks)
    (True, 10, 4, 10, (4, 10))
    >>> dict(zip(chunks.dims, chunks)), dict(chunks)
    ({'time': 4, 'lat': 10}, {0: 4, 1: 10})
    """

    def __init__(self, sizes: Sequence[int], dims: Sequence[str] | None = None) -> None:
        super().__init__(enumerate(sizes))
        if dims is not None and len(dims) != len(sizes):
            raise ValueError(f"{len(dims)} dimension names for {len(sizes)} sizes: {dims!r}")
        self.dims: tuple[str, ...] | None = None if dims is None else tuple(dims)

    def _axis(self, key: object) -> object:
        if isinstance(key, str) and self.dims is not None and key in self.dims:
            return self.dims.index(key)
        if isinstance(key, int) and not isinstance(key, bool) and -len(self) <= key < 0:
            return key + len(self)
        return key

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return tuple(self)[key]
        return super().__getitem__(self._axis(key))  # type: ignore[index]

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._axis(key), default)  # type: ignore[call-overload]

    def __iter__(self) -> Iterator[int]:
        return iter(self.values())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, tuple | list):
            return tuple(self) == tuple(other)
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        dims = "" if self.dims is None else f", dims={self.dims!r}"
        return f"DaskChunks({tuple(self)!r}{dims})"


def _dimension_names(store: Any, prefix: str, ndim: int) -> tuple[str, ...] | None:
    """Return the array's ``_ARRAY_DIMENSIONS`` (xarray's names), if it has valid ones."""
    try:
        attrs = json.loads(ensure_bytes(store[f"{prefix}/.zattrs" if prefix else ".zattrs"]))
    except (KeyError, ValueError, TypeError):
        return None
    names = attrs.get("_ARRAY_DIMENSIONS") if isinstance(attrs, dict) else None
    if isinstance(names, list) and len(names) == ndim and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def dask_chunks_for(
    store: _LaidOut | Mapping[str, Any],
    path: str,
    *,
    shards_per_chunk: int | Sequence[int] = 1,
) -> DaskChunks:
    """Return dask chunk sizes that cover whole shards of the array at ``path`` in ``store``.

    Why: writing such dask chunks into the array (``to_zarr(..., region=...)``,
    ``append_dim``, ``dask.array.to_zarr``) writes whole shards, which needs no lock
    and no read. For an array that is not sharded (or a store that does not shard),
    the zarr chunks themselves are the unit of storage and are returned, times
    ``shards_per_chunk``.

    Parameters
    ----------
    store
        A :class:`~shardedstore.ShardedStore` (or any zarr v2 store).
    path
        The array's path in the store (``""`` for a root array; the variable name for
        an xarray dataset written at the root).
    shards_per_chunk
        How many shards each dask chunk spans, per dimension or one int for all.

    Returns
    -------
    DaskChunks
        One chunk size per dimension: pass it as ``chunks=`` to ``xr.open_zarr``,
        ``dask.array.from_array`` or ``rechunk``; it also iterates and compares as the
        tuple of sizes (``dict(zip(ds["v"].dims, chunks))`` for ``Dataset.chunk``).

    Raises
    ------
    KeyError
        If there is no array at ``path``.

    Examples
    --------
    >>> import zarr
    >>> from shardedstore import ShardedStore
    >>> store = ShardedStore(zarr.storage.MemoryStore(), chunk_shards={"*": (4, 2)})
    >>> _ = zarr.create((100, 100), chunks=(10, 10), store=store, path="v")
    >>> dask_chunks_for(store, "v")
    DaskChunks((40, 20))
    >>> dask_chunks_for(store, "v", shards_per_chunk=(1, 5)) == (40, 100)
    True
    """
    prefix = strip_path(path)
    key = f"{prefix}/.zarray" if prefix else ".zarray"
    layout = store.layout(prefix) if isinstance(store, _LaidOut) else None
    if layout is None:  # not a sharding store (or an array it does not shard)
        meta = json.loads(ensure_bytes(cast("Mapping[str, Any]", store)[key]))
        shape, chunks = tuple(meta["shape"]), tuple(meta["chunks"])
    else:
        shape, chunks = layout.shape, layout.chunks
    cps = 1 if layout is None or layout.chunks_per_shard is None else layout.chunks_per_shard
    sizes = shard_aligned_chunks(shape, chunks, cps, shards_per_chunk=shards_per_chunk)
    return DaskChunks(sizes, _dimension_names(store, prefix, len(sizes)))
