"""Property tests: random arrays and random updates, through a plain store and a sharded one.

Every example creates the same array on a plain zarr ``MemoryStore`` and on a ``ShardedStore``
over some base store, applies the same sequence of operations to both (writes of random
slices, of scalars, of fill values with ``write_empty_chunks=False``, resizes that drop
chunks, deletions of chunk keys, optionally inside ``buffered()``), and compares every value,
the logical keys, the presented ``.zarray`` and ``nchunks_initialized`` after each step, then
reopens the base with ``ShardedStore(base)`` (no configuration) and compares again.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.storage import (
    DirectoryStore,
    FSStore,
    MemoryStore,
    NestedDirectoryStore,
    ZipStore,
)

from shardedstore import ShardedStore
from shardedstore.format.layout import clamp_to_grid
from tests.support.strategies import (
    ArraySpec,
    array_specs,
    assert_same_values,
    prop_settings,
    random_values,
)

BASE_KINDS = ["dict", "memory", "directory", "nested", "fsspec-memory", "fsspec-file"]


# -- base stores ------------------------------------------------------------------------------


@dataclass
class Bases:
    """A base store to shard into, how to reopen it, and the plain store to compare with."""

    base: Any
    plain: Any
    reopen: Any  # () -> base store, a fresh instance over the same data


@contextlib.contextmanager
def make_bases(kind: str) -> Iterator[Bases]:
    """Create an empty base store of ``kind``, and a plain store of the same kind to compare with.

    The plain store is of the same kind because zarr's listing differs between store kinds
    (e.g. ``nchunks_initialized`` of a nested array on ``MemoryStore`` vs
    ``NestedDirectoryStore``), and the sharded store must behave as its base would.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path, plain_path = os.path.join(tmp, "base"), os.path.join(tmp, "plain")
        if kind == "dict":
            base: Any = {}
            yield Bases(base, {}, lambda: base)
        elif kind == "memory":
            base = MemoryStore()
            yield Bases(base, MemoryStore(), lambda: base)
        elif kind == "directory":
            yield Bases(
                DirectoryStore(path), DirectoryStore(plain_path), lambda: DirectoryStore(path)
            )
        elif kind == "nested":
            yield Bases(
                NestedDirectoryStore(path),
                NestedDirectoryStore(plain_path),
                lambda: NestedDirectoryStore(path),
            )
        elif kind == "fsspec-memory":
            url, plain_url = (f"memory://props-{uuid.uuid4().hex}" for _ in range(2))
            try:
                yield Bases(FSStore(url), FSStore(plain_url), lambda: FSStore(url))
            finally:
                for u in (url, plain_url):
                    with contextlib.suppress(FileNotFoundError):
                        FSStore(u).fs.rm(u, recursive=True)
        elif kind == "fsspec-file":
            yield Bases(FSStore(path), FSStore(plain_path), lambda: FSStore(path))
        else:  # pragma: no cover
            raise ValueError(kind)


# -- operations -------------------------------------------------------------------------------


def _selections(shape: tuple[int, ...]) -> st.SearchStrategy[tuple[slice, ...]]:
    def one(n: int) -> st.SearchStrategy[slice]:
        return st.tuples(st.integers(0, n), st.integers(0, n), st.sampled_from([1, 1, 2, 3])).map(
            lambda t: slice(min(t[0], t[1]), max(t[0], t[1]), t[2])
        )

    return st.tuples(*(one(n) for n in shape))


@st.composite
def operations(draw: st.DrawFn, spec: ArraySpec) -> list[tuple[Any, ...]]:
    """Draw up to five operations on an array of ``spec`` (shape as it evolves)."""
    ops: list[tuple[Any, ...]] = []
    shape = spec.shape
    garbage_free = spec.fill_value is not None  # else unwritten regions hold np.empty garbage
    for _ in range(draw(st.integers(1, 5))):
        choices = ["set", "scalar"]
        if garbage_free:
            choices += ["fill", "fill", "delete"]
            if shape:
                choices.append("resize")
        kind = draw(st.sampled_from(choices))
        if kind in ("set", "scalar", "fill"):
            ops.append((kind, draw(_selections(shape)), draw(st.integers(0, 2**32 - 1))))
        elif kind == "delete":
            grid = [max(1, -(-s // c)) for s, c in zip(shape, spec.chunks, strict=True)]
            ops.append(("delete", tuple(draw(st.integers(0, g - 1)) for g in grid)))
        else:
            shape = tuple(draw(st.integers(0, s + s // 2 + 1)) for s in shape)
            ops.append(("resize", shape))
    return ops


def _chunk_key(z: zarr.Array, coords: tuple[int, ...]) -> str:
    return str(z._chunk_key(coords or (0,)))  # zarr 2 keys the chunk of a 0-d array "0"


def apply_op(z: zarr.Array, spec: ArraySpec, op: tuple[Any, ...]) -> None:
    """Apply one operation to ``z`` (the same call on the plain and the sharded array)."""
    kind = op[0]
    if kind == "resize":
        z.resize(*op[1])
        return
    if kind == "delete":
        with contextlib.suppress(KeyError):
            del z.store[_chunk_key(z, op[1])]
        return
    selection, seed = op[1], op[2]
    selection = tuple(
        slice(min(s.start, n), min(s.stop, n), s.step)
        for s, n in zip(selection, z.shape, strict=True)
    )
    target_shape = tuple(len(range(*s.indices(n))) for s, n in zip(selection, z.shape, strict=True))
    if 0 in target_shape:
        return  # zarr 2.18 cannot write an empty selection (on any store)
    if kind == "fill":
        z[selection] = spec.fill_value
        return
    if kind == "scalar":
        value = random_values(spec, (), seed)[()]
        if spec.np_dtype.kind == "O" and target_shape:
            region = np.empty(target_shape, dtype=object)
            region.fill(value)
            z[selection] = region
        else:
            z[selection] = value
        return
    values = random_values(spec, target_shape, seed)
    z[selection] = values[()] if values.ndim == 0 else values


# -- comparison -------------------------------------------------------------------------------


def _meta(store: Any, key: str) -> Any:
    return json.loads(bytes(store[key]))


def logical_meta(store: Any) -> Any:
    """Return the presented ``.zarray``; a missing separator means ``"."`` (zarr 2 default:
    zarr wraps a plain dict in a ``KVStore`` that records ``"."``, a wrapper over it need not)."""
    meta = _meta(store, ".zarray")
    if meta.get("dimension_separator") is None:
        meta["dimension_separator"] = "."
    return meta


def sharding_codec_of(stored: dict[str, Any]) -> dict[str, Any] | None:
    """Return the ``sharding_indexed`` config of a stored ``.zarray`` (compressor, or the
    only filter for object dtypes, which zarr 2 requires to start with an object codec)."""
    candidates = [stored.get("compressor"), *(stored.get("filters") or [])]
    for codec in candidates:
        if isinstance(codec, dict) and codec.get("id") == "sharding_indexed":
            return codec
    return None


def assert_same_array(sharded: zarr.Array, plain: zarr.Array, *, listing: bool = True) -> None:
    """Compare values, logical keys, presented metadata and initialised chunk counts."""
    assert sharded.shape == plain.shape
    assert_same_values(sharded[...], plain[...])
    assert logical_meta(sharded.store) == logical_meta(plain.store)
    if not listing:  # inside buffered(): listing is checked after the block
        return
    assert sorted(sharded.store.keys()) == sorted(plain.store.keys())
    assert len(sharded.store) == len(plain.store)
    # With the "/" separator zarr 2 counts what listdir returns: chunk keys on stores that list
    # nested keys whole, else top-level folders -- including folders a deletion left empty.
    # The sharded store may count only the chunks (folders) that exist.
    chunk_keys = [k for k in plain.store if not k.rsplit("/", 1)[-1].startswith(".")]
    folders = {k.split("/", 1)[0] for k in chunk_keys}
    expected = {plain.nchunks_initialized, len(chunk_keys), len(folders)}
    if sharded._dimension_separator != "/":
        expected = {plain.nchunks_initialized, len(chunk_keys)}
    assert sharded.nchunks_initialized in expected


def assert_stored_as_shards(base: Any, spec: ArraySpec, shape: tuple[int, ...]) -> None:
    """Check the stored form: a sharded ``.zarray`` and only shard-grid keys beside it."""
    stored = _meta(base, ".zarray")
    codec = sharding_codec_of(stored)
    assert codec is not None
    # clamped to the chunk grid at creation; a resize before any chunk is stored may regrow it
    cps = tuple(codec["chunks_per_shard"])
    lowest = clamp_to_grid(spec.chunks_per_shard, spec.shape, spec.chunks)
    assert all(lo <= n <= hi for lo, n, hi in zip(lowest, cps, spec.chunks_per_shard, strict=True))
    assert stored["chunks"] == [c * n for c, n in zip(spec.chunks, cps, strict=True)]
    assert codec["chunk_shape"] == list(spec.chunks)
    shard_grid = [-(-s // (c * n)) for s, c, n in zip(shape, spec.chunks, cps, strict=True)]
    data_keys = [k for k in base if not k.rsplit("/", 1)[-1].startswith(".")]
    assert len(data_keys) <= max(1, math.prod(shard_grid))


def check_roundtrip(kind: str, spec: ArraySpec, ops: list[tuple[Any, ...]], *, first: Any) -> None:
    write_full, write_empty, use_buffer = first
    if spec.fill_value is None:
        write_full = True  # unwritten regions would be np.empty garbage on both sides
    if not spec.shape and spec.np_dtype.kind == "O":
        write_empty = True  # zarr 2.18's all_equal fails on 0-d object chunks (any store)
    with make_bases(kind) as bases, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # casts of NaN/inf by filters
        store = ShardedStore(bases.base, chunk_shards={"*": spec.chunks_per_shard})
        kwargs = spec.open_kwargs()
        if kind == "nested":
            kwargs.pop("dimension_separator", None)  # the base store decides
        sharded = zarr.open_array(store=store, mode="w", write_empty_chunks=write_empty, **kwargs)
        plain = zarr.open_array(
            store=bases.plain, mode="w", write_empty_chunks=write_empty, **kwargs
        )
        if write_full:
            data = random_values(spec, spec.shape, 12345)
            sharded[...] = data
            plain[...] = data
        assert_same_array(sharded, plain)
        buffered = store.buffered() if use_buffer else contextlib.nullcontext()
        with buffered:
            for op in ops:
                apply_op(sharded, spec, op)
                apply_op(plain, spec, op)
                assert_same_array(sharded, plain, listing=not use_buffer)
        assert_same_array(sharded, plain)
        assert_stored_as_shards(bases.base, spec, plain.shape)
        reopened = zarr.open_array(store=ShardedStore(bases.reopen()), mode="r")
        assert_same_array(reopened, plain)


first_steps = st.tuples(st.booleans(), st.booleans(), st.booleans())


@st.composite
def specs_and_ops(draw: st.DrawFn, /, **kwargs: Any) -> tuple[ArraySpec, list[tuple[Any, ...]]]:
    spec = draw(array_specs(**kwargs))
    return spec, draw(operations(spec))


# -- the properties ---------------------------------------------------------------------------


@prop_settings()
@given(case=specs_and_ops(), first=first_steps)
def test_random_arrays_and_updates_match_plain_zarr_on_memory_store(case, first):
    spec, ops = case
    check_roundtrip("memory", spec, ops, first=first)


@pytest.mark.parametrize("kind", [k for k in BASE_KINDS if k != "memory"])
@prop_settings(0.4)
@given(case=specs_and_ops(), first=first_steps)
def test_random_arrays_and_updates_match_plain_zarr_on_each_base(kind, case, first):
    spec, ops = case
    if kind == "nested":
        spec.separator = None
    check_roundtrip(kind, spec, ops, first=first)


@pytest.fixture
def slow_tier(request: pytest.FixtureRequest) -> None:
    """Skip unless the slow tier was asked for (``-m slow``): the default run stays fast."""
    if "slow" not in (request.config.getoption("markexpr", "") or ""):
        pytest.skip("slow tier: run with -m slow")


@pytest.mark.slow
@pytest.mark.usefixtures("slow_tier")
@pytest.mark.parametrize("kind", BASE_KINDS)
@prop_settings(5)
@given(case=specs_and_ops(), first=first_steps)
def test_random_arrays_and_updates_match_plain_zarr_thoroughly(kind, case, first):
    spec, ops = case
    if kind == "nested":
        spec.separator = None
    check_roundtrip(kind, spec, ops, first=first)


@prop_settings(0.5)
@given(spec=array_specs(), seed=st.integers(0, 2**32 - 1))
def test_zip_store_written_then_reopened_read_only_matches(spec, seed):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate member names from rewritten shards
        path = os.path.join(tmp, "data.zip")
        data = random_values(spec, spec.shape, seed)
        with ZipStore(path, mode="w", compression=zipfile.ZIP_STORED) as zs:
            store = ShardedStore(zs, chunk_shards={"*": spec.chunks_per_shard})
            z = zarr.open_array(store=store, mode="w", **spec.open_kwargs())
            z[...] = data
        plain = zarr.open_array(store=MemoryStore(), mode="w", **spec.open_kwargs())
        plain[...] = data
        with ZipStore(path, mode="r") as zs:
            assert_stored_as_shards(zs, spec, spec.shape)
            reopened = zarr.open_array(store=ShardedStore(zs), mode="r")
            assert_same_array(reopened, plain)


@prop_settings(0.5)
@given(
    spec=array_specs(min_dims=1, kinds=("numeric",)),
    seed=st.integers(0, 2**32 - 1),
    deflated=st.booleans(),
)
def test_zip_store_partial_rewrites_read_back_latest(spec, seed, deflated):
    """ZipStore appends rewritten members; reads must see the newest shard, stored or deflated."""
    compression = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "data.zip")
        first = random_values(spec, spec.shape, seed)
        second = random_values(spec, spec.shape, seed + 1)
        update = tuple(slice(0, max(1, n // 2)) for n in spec.shape)
        plain = zarr.open_array(store=MemoryStore(), mode="w", **spec.open_kwargs())
        with ZipStore(path, mode="w", compression=compression) as zs:
            store = ShardedStore(zs, chunk_shards={"*": spec.chunks_per_shard})
            z = zarr.open_array(store=store, mode="w", **spec.open_kwargs())
            for target in (z, plain):
                target[...] = first
                target[update] = second[update]
            assert_same_values(z[...], plain[...])
        with ZipStore(path, mode="r") as zs:
            reopened = zarr.open_array(store=ShardedStore(zs), mode="r")
            assert_same_values(reopened[...], plain[...])


# -- groups -----------------------------------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "temp", "x_1", "g"])


@st.composite
def hierarchies(draw: st.DrawFn) -> list[tuple[str, ArraySpec, bool]]:
    """Draw arrays at random paths of a group tree, each with its own chunks per shard."""
    out: list[tuple[str, ArraySpec, bool]] = []
    paths: set[str] = set()
    for _ in range(draw(st.integers(1, 4))):
        depth = draw(st.integers(0, 3))
        parts = [draw(_NAMES) for _ in range(depth)]
        parts.append(f"arr{len(out)}")
        path = "/".join(parts)
        # an array cannot sit where another array's group would go
        if any(p == path or path.startswith(p + "/") or p.startswith(path + "/") for p in paths):
            continue
        paths.add(path)
        spec = draw(array_specs(max_dims=3, kinds=("numeric", "string", "object")))
        out.append((path, spec, draw(st.booleans())))  # bool: configured by path, else "*"
    return out


@pytest.mark.parametrize("kind", ["memory", "directory", "nested"])
@prop_settings(0.5)
@given(tree=hierarchies(), seed=st.integers(0, 2**16), consolidate=st.booleans())
def test_groups_with_nested_arrays_match_plain_zarr(kind, tree, seed, consolidate):
    by_path = {path: spec.chunks_per_shard for path, spec, per_path in tree if per_path}
    # "*" only shards arrays whose dimensionality matches; per-path entries win
    star = (2, 2)
    with make_bases(kind) as bases, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        store = ShardedStore(bases.base, chunk_shards={"*": star, **by_path})
        roots = [
            zarr.open_group(store=store, mode="w"),
            zarr.open_group(store=bases.plain, mode="w"),
        ]
        for root in roots:
            root.attrs["title"] = "tree"
        for i, (path, spec, _per_path) in enumerate(tree):
            kwargs = spec.open_kwargs()
            if kind == "nested":
                kwargs.pop("dimension_separator", None)
            if spec.fill_value is None:
                kwargs["fill_value"] = 0 if spec.np_dtype.kind != "O" else None
            data = random_values(spec, spec.shape, seed + i)
            write = tuple(slice(0, max(1, n - 1)) for n in spec.shape)
            for root in roots:
                arr = root.create_dataset(path, **kwargs)
                arr[write] = data[write]
                arr.attrs["i"] = i
        if consolidate:
            zarr.consolidate_metadata(store)
            zarr.consolidate_metadata(bases.plain)
            assert json.loads(bytes(store[".zmetadata"])) == json.loads(
                bytes(bases.plain[".zmetadata"])
            )
        assert sorted(store.keys()) == sorted(bases.plain.keys())
        for path, spec, per_path in tree:
            expected_cps = spec.chunks_per_shard if per_path else None
            if not per_path and len(spec.shape) == len(star):
                expected_cps = star
            codec = sharding_codec_of(_meta(bases.base, f"{path}/.zarray"))
            assert (codec is not None) == (expected_cps is not None)
            if codec is not None and expected_cps is not None:
                clamped = clamp_to_grid(expected_cps, spec.shape, spec.chunks)
                assert codec["chunks_per_shard"] == list(clamped)
        reopened_store = ShardedStore(bases.reopen())
        reopened = (
            zarr.open_consolidated(reopened_store)
            if consolidate
            else zarr.open_group(reopened_store)
        )
        plain_root = zarr.open_group(store=bases.plain, mode="r")
        assert sorted(reopened.array_keys()) == sorted(plain_root.array_keys())
        for path, _spec, _ in tree:
            assert_same_values(reopened[path][...], plain_root[path][...])
            assert reopened[path].attrs.asdict() == plain_root[path].attrs.asdict()
            assert reopened[path].nchunks_initialized == plain_root[path].nchunks_initialized


# -- a few cases worth pinning down explicitly ------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks", "cps"),
    [
        ((0,), (3,), (2,)),
        ((5, 0), (2, 2), (2, 2)),
        ((), (), ()),
        ((7,) * 6, (2,) * 6, (2,) * 6),
    ],
)
def test_edge_shapes_match_plain_zarr(shape, chunks, cps):
    spec = ArraySpec(shape=shape, chunks=chunks, chunks_per_shard=cps, dtype="<i4")
    store = ShardedStore(MemoryStore(), chunk_shards={"*": cps})
    sharded = zarr.open_array(store=store, mode="w", **spec.open_kwargs())
    plain = zarr.open_array(store=MemoryStore(), mode="w", **spec.open_kwargs())
    data = random_values(spec, shape, 7)
    for z in (sharded, plain):
        z[...] = data
    assert_same_array(sharded, plain)
    for z in (sharded, plain):
        z[(slice(0, 1),) * len(shape)] = 0
    assert_same_array(sharded, plain)


def test_every_chunk_of_an_edge_shard_round_trips():
    """Shapes that are no multiple of chunks or shards: each chunk written alone, then read."""
    shape, chunks, cps = (11, 7), (3, 2), (3, 2)
    spec = ArraySpec(shape=shape, chunks=chunks, chunks_per_shard=cps, dtype="<f8")
    store = ShardedStore(MemoryStore(), chunk_shards={"*": cps})
    sharded = zarr.open_array(store=store, mode="w", **spec.open_kwargs())
    plain = zarr.open_array(store=MemoryStore(), mode="w", **spec.open_kwargs())
    data = random_values(spec, shape, 3)
    for i, j in itertools.product(range(0, 11, 3), range(0, 7, 2)):
        region = (slice(i, i + 3), slice(j, j + 2))
        for z in (sharded, plain):
            z[region] = data[region]
        assert_same_array(sharded, plain)
