"""``ChunkShardingStore``: zarr v2 chunks packed into shards on one base store.

This is the translation layer. zarr reads and writes chunk keys such as
``temp/3.1.7``; this store maps each chunk of a sharded array to a ``(shard key,
slot)`` pair, serves reads with byte-range requests (see :mod:`shardedstore.io`)
and writes whole shards, read-modify-write under a per-shard lock where only
part of a shard changes. Keys of arrays that are not sharded, and all other keys,
pass through unchanged; metadata of sharded arrays is translated both ways (see
:mod:`shardedstore._meta`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from zarr.storage import Store, _listdir_from_keys
from zarr.storage import listdir as zarr_listdir
from zarr.storage import rmdir as zarr_rmdir

from shardedstore._buffer import Update, WriteBuffer
from shardedstore._format import ShardIndex
from shardedstore._keys import (
    ARRAY_META_KEY,
    CONSOLIDATED_KEY,
    check_key,
    parse_chunk_coords,
    split_key,
)
from shardedstore._listing import ListingMixin, is_temp_name
from shardedstore._meta import (
    CHUNK_CHECKSUMS_DEFAULT,
    ArrayLayout,
    ChunkShards,
    ChunksPerShard,
    layout_from_stored,
    normalize_chunk_shards,
)
from shardedstore._rename import (
    is_under,
    meta_documents,
    move_stored_keys,
    own_rename,
    rename_paths,
    update_consolidated,
)
from shardedstore._translate import MetadataMixin, parse_json
from shardedstore._writes import WriteMixin, as_buffer
from shardedstore.errors import RenameError, ShardCorruptionError, ShardingConfigError
from shardedstore.io import CachedIndex, ShardIO, io_for
from shardedstore.locks import LockProvider
from shardedstore.v3 import V3Sync

__all__ = ["ChunkShardingStore"]

_NO_ARRAY: Any = object()  # negative layout-cache entry
_TARGET_MEMO_SIZE = 1 << 16
_NODE_KEYS = (ARRAY_META_KEY, ".zgroup")

#: what a decoded shard index depends on: an index is only ever used under an equal one
IndexToken = tuple[str, tuple[int, ...], str, tuple[int, ...] | None, str]


def index_token(layout: ArrayLayout) -> IndexToken:
    """Return what the meaning of a shard index of ``layout`` depends on.

    The array's shape is left out: a resize changes neither the slots of a shard nor
    what they hold, so cached indexes survive appends.
    """
    return (
        layout.path,
        layout.chunks,
        layout.separator,
        layout.chunks_per_shard,
        layout.index_location,
    )


def _data_token(layout: ArrayLayout) -> object:
    """Return what decides how the objects under an array are read as chunks."""
    if not layout.sharded:
        return (layout.chunks, layout.separator)
    return index_token(layout)


def check_chunk_size(layout: ArrayLayout, shard_key: str, slot: int, data: bytes) -> bytes:
    """Return ``data``, the stored bytes of a chunk, if zarr can decode chunks of that size.

    An index entry of 0 bytes is a present chunk with no bytes (zarr-python 3 reads it so
    too, never as absent), and an array stored without codecs has chunks of one size:
    anything else would reach zarr as a numpy ``ValueError`` that names no shard.

    Raises
    ------
    ShardCorruptionError
        If the chunk is empty, or not of the raw size of an array without codecs.
    """
    expected = layout.raw_chunk_nbytes
    if expected is not None and len(data) != expected:
        raise ShardCorruptionError(
            shard_key,
            f"slot {slot} holds {len(data)} bytes, expected {expected} for a chunk of "
            f"{layout.chunks} stored without compressor or filters",
        )
    if not data and all(layout.chunks):
        raise ShardCorruptionError(shard_key, f"slot {slot} is present but holds 0 bytes")
    return data


class _IndexView:
    """The index cache as one layout sees it: indexes decoded for another layout are misses.

    Why: another store instance may re-create an array with other chunks per shard; the
    shard keys stay the same, and with as many slots an index read under the old layout
    would be applied to the new one's shards without any checksum failing.
    """

    __slots__ = ("_store", "layout", "token")

    def __init__(self, store: ChunkShardingStore, layout: ArrayLayout) -> None:
        self._store = store
        self.layout = layout
        self.token = index_token(layout)

    def get(self, shard_key: str) -> CachedIndex | None:
        store = self._store
        with store._cache_lock:
            hit = store._indexes.get(shard_key)
            if hit is None or (hit[0] is not self.token and hit[0] != self.token):
                return None
            store._indexes.move_to_end(shard_key)
            return hit[1]

    def put(self, shard_key: str, entry: CachedIndex | None) -> None:
        self._store._remember(shard_key, entry, self.token)


class ChunkShardingStore(MetadataMixin, WriteMixin, ListingMixin, Store):  # type: ignore[misc]  # zarr 2 is untyped
    """A zarr v2 store that packs the chunks of chosen arrays of ``base`` into shards.

    Parameters
    ----------
    base
        Any zarr v2 store (``DirectoryStore``, ``FSStore``, ``ZipStore``, ``MemoryStore``...).
    chunk_shards
        ``{array path or "*": chunks per shard}``; see :class:`shardedstore.ShardedStore`.
    dimension_separator
        Separator of chunk key dimensions; defaults to the base store's.
    lock
        Per-shard lock provider held around every shard replacement. By default the base
        store's I/O backend chooses: a ``flock`` per shard on local file systems
        (:class:`~shardedstore.locks.ShardFileLocks`), else
        :class:`~shardedstore.locks.ThreadLocks`.
    index_cache_size
        How many shard indexes to keep (LRU); ``0`` disables the cache.
    chunk_checksums
        Whether arrays created through this store store a CRC32C after each chunk
        (the v3 ``crc32c`` codec), checked on every read. Recorded in each array's
        metadata: existing arrays keep what they were created with.
    durable
        Whether a shard write on local files is fsynced (file before its rename, folder
        after it) before it returns; ``False`` for scratch data.
    """

    def __init__(
        self,
        base: Any,
        chunk_shards: ChunkShards | None = None,
        *,
        dimension_separator: str | None = None,
        lock: LockProvider | None = None,
        index_cache_size: int = 4096,
        chunk_checksums: bool = CHUNK_CHECKSUMS_DEFAULT,
        durable: bool = True,
    ) -> None:
        self.base = base
        self.chunk_shards = normalize_chunk_shards(chunk_shards)
        if dimension_separator is None:
            dimension_separator = getattr(base, "_dimension_separator", None)
        if dimension_separator not in (None, ".", "/"):
            raise ValueError(f"dimension_separator must be '.' or '/', got {dimension_separator!r}")
        self._dimension_separator = dimension_separator
        self._given_lock = lock
        self.index_cache_size = index_cache_size
        self.chunk_checksums = bool(chunk_checksums)
        self.durable = bool(durable)
        self._setup()

    def _setup(self) -> None:
        self.io: ShardIO = io_for(self.base)
        self.io.durable = self.durable
        given = self._given_lock
        self.lock: LockProvider = given if given is not None else self.io.default_lock()
        self._layouts: dict[str, Any] = {}
        self._targets: dict[str, tuple[ArrayLayout, str, int]] = {}
        self._indexes: OrderedDict[str, tuple[IndexToken, CachedIndex]] = OrderedDict()
        self._views: dict[int, _IndexView] = {}
        self._cache_lock = threading.Lock()
        self._buffer: WriteBuffer | None = None
        self._buffer_depth = 0
        self._buffer_lock = threading.RLock()
        self._v3 = V3Sync()

    # -- pickling: state is the configuration, caches are rebuilt ----------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "chunk_shards": self.chunk_shards,
            "dimension_separator": self._dimension_separator,
            "lock": self._given_lock,
            "index_cache_size": self.index_cache_size,
            "chunk_checksums": self.chunk_checksums,
            "durable": self.durable,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.base = state["base"]
        self.chunk_shards = state["chunk_shards"]
        self._dimension_separator = state["dimension_separator"]
        self._given_lock = state["lock"]
        self.index_cache_size = state["index_cache_size"]
        self.chunk_checksums = state.get("chunk_checksums", False)
        self.durable = state.get("durable", True)
        self._setup()

    # -- array layouts -----------------------------------------------------------------
    def layout(self, path: str, *, fresh: bool = False) -> ArrayLayout | None:
        """Return the layout of the array at ``path``, or ``None`` if there is none."""
        if not fresh:
            cached = self._layouts.get(path)
            if cached is not None:
                return None if cached is _NO_ARRAY else cached
        key = f"{path}/{ARRAY_META_KEY}" if path else ARRAY_META_KEY
        try:
            raw = self.base[key]
        except KeyError:
            self._set_layout(path, None)
            return None
        return self._layout_from_raw(path, raw)

    def _layout_from_raw(self, path: str, raw: Any) -> ArrayLayout | None:
        """Derive (and cache) the layout of ``path`` from its stored ``.zarray`` bytes."""
        meta = parse_json(raw)
        if not isinstance(meta, dict) or "shape" not in meta or "chunks" not in meta:
            self._set_layout(path, None)
            return None
        self._set_layout(path, layout_from_stored(meta, path, self._default_separator))
        return self.layout(path)

    def _set_layout(self, path: str, layout: ArrayLayout | None) -> None:
        """Cache the layout of ``path``; an equal cached one is kept (warm paths compare by ``is``)."""
        value = _NO_ARRAY if layout is None else layout
        old = self._layouts.get(path)
        if old is value or (isinstance(old, ArrayLayout) and old == value):
            return
        self._targets.clear()
        self._views.clear()
        if isinstance(old, ArrayLayout) and (
            not isinstance(layout, ArrayLayout) or index_token(old) != index_token(layout)
        ):
            self._forget_indexes(path)  # they could never be used again: free them
        self._layouts[path] = value

    def _drop_layout(self, path: str) -> None:
        self._targets.clear()
        self._views.clear()
        self._layouts.pop(path, None)

    def _forget_layouts(self, prefix: str) -> None:
        self._targets.clear()
        self._views.clear()
        for path in list(self._layouts):
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                del self._layouts[path]

    def _locate(self, key: str) -> tuple[ArrayLayout, str, int] | None:
        """Return ``(layout, shard key, slot)`` of a chunk of a sharded array, else ``None``.

        Results are memoised per key (the memo is dropped whenever a layout changes),
        since zarr asks for the same chunk keys again and again.
        """
        hit = self._targets.get(key)
        if hit is not None:
            return hit
        layout: ArrayLayout | None = None
        coords: tuple[int, ...] | None = None
        if isinstance(key, str):
            parent, _, name = key.rpartition("/")
            known = self._layouts.get(parent)
            if (
                isinstance(known, ArrayLayout)
                and known.chunks_per_shard is not None
                and known.separator == "."
                and name[:1].isdigit()
            ):
                # the common case: a "."-separated chunk key of a known array. Its path is a
                # checked one, and a name that parses as coordinates holds no "..", "/", NUL.
                coords = parse_chunk_coords(name, known.ndim, ".")
                layout = known
        if layout is None or coords is None:
            check_key(key)
            target = self.chunk_target(key)
            if target is None or not target[0].sharded:
                return None
            layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        if len(self._targets) >= _TARGET_MEMO_SIZE:
            self._targets.clear()
        hit = self._targets[key] = (layout, shard_key, slot)
        return hit

    def chunk_target(
        self, key: str, *, fresh: bool = False
    ) -> tuple[ArrayLayout, tuple[int, ...]] | None:
        """Return ``(layout, chunk coordinates)`` if ``key`` is a chunk of an array."""
        _parent, name = split_key(key)
        if not name or name[0] == ".":
            return None
        segments = key.split("/")
        for i in range(len(segments) - 1, -1, -1):
            segment = segments[i]
            if not segment.replace(".", "").isdigit():
                return None
            path = "/".join(segments[:i])
            layout = self.layout(path, fresh=fresh)
            if layout is not None:
                tail = "/".join(segments[i:])
                coords = parse_chunk_coords(tail, layout.ndim, layout.separator)
                return None if coords is None else (layout, coords)
        return None

    # -- index cache -------------------------------------------------------------------
    def _index_view(self, layout: ArrayLayout) -> _IndexView:
        """Return the index cache as ``layout`` sees it (memoised per layout object)."""
        view = self._views.get(id(layout))
        if view is None or view.layout is not layout:
            if len(self._views) >= _TARGET_MEMO_SIZE:
                self._views.clear()
            view = self._views[id(layout)] = _IndexView(self, layout)
        return view

    def _remember(
        self, shard_key: str, entry: CachedIndex | None, token: IndexToken | None = None
    ) -> None:
        """Cache the index of a shard decoded under the layout ``token`` (``None``: forget it)."""
        if self.index_cache_size <= 0:
            return
        with self._cache_lock:
            if entry is None or token is None:
                self._indexes.pop(shard_key, None)
                return
            self._indexes[shard_key] = (token, entry)
            self._indexes.move_to_end(shard_key)
            while len(self._indexes) > self.index_cache_size:
                self._indexes.popitem(last=False)

    def _forget_indexes(self, prefix: str = "") -> None:
        with self._cache_lock:
            if not prefix:
                self._indexes.clear()
                return
            for key in [k for k in self._indexes if k.startswith(prefix + "/")]:
                del self._indexes[key]

    def read_index(self, layout: ArrayLayout, shard_key: str) -> ShardIndex | None:
        """Return the (cached) index of a shard, or ``None`` if the shard does not exist."""
        view = self._index_view(layout)
        entry = self.io.read_shards(layout, {shard_key: []}, view.get)[shard_key].index
        view.put(shard_key, entry)
        return None if entry is None else entry.index

    # -- reads -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        hit = self._locate(key)
        if hit is None:
            return self._read_plain(key)
        value = self._read_chunk(*hit)
        if value is None:
            raise KeyError(key)
        return value

    def _read_chunk(self, layout: ArrayLayout, shard_key: str, slot: int) -> bytes | None:
        if self._buffer is not None:
            buffered = self._buffered_chunk(shard_key, slot)
            if buffered is not None:
                return buffered[0]
        view = self._index_view(layout)
        data = self.io.read_chunk(layout, shard_key, slot, view.get, view.put)
        if data is not None and (not data or layout.raw_chunk_nbytes is not None):
            check_chunk_size(layout, shard_key, slot, data)
        return data

    def _read_plain(self, key: str) -> Any:
        """Read a key that is no chunk of a sharded array, presenting metadata as zarr expects.

        Reading an array's ``.zarray`` (as ``zarr.open_array`` does) re-derives its layout
        from the bytes read: another store instance may have re-created the array since.
        Reading ``.zmetadata`` (``zarr.open_consolidated``) forgets the layouts below it,
        so each is read again from its ``.zarray`` when a chunk is next read.
        """
        raw = self.base[key]
        parent, name = split_key(key)
        if name == ARRAY_META_KEY:
            self._layout_from_raw(parent, raw)
        elif name == CONSOLIDATED_KEY:
            self._forget_layouts(parent)
        return self._present_meta(key, raw)

    def getitems(self, keys: Sequence[str], *, contexts: Any = None) -> dict[str, Any]:
        """Read many keys, one batch of range requests per array (see :mod:`.io`)."""
        if len(keys) == 1:  # the common single-chunk read: no grouping
            key = keys[0]
            hit = self._locate(key)
            if hit is not None:
                value = self._read_chunk(*hit)
                return {} if value is None else {key: value}
        out: dict[str, Any] = {}
        plain: list[str] = []
        wanted: dict[str, tuple[ArrayLayout, dict[str, list[tuple[int, str]]]]] = {}
        for key in keys:
            hit = self._locate(key)
            if hit is None:
                plain.append(key)
                continue
            layout, shard_key, slot = hit
            buffered = self._buffered_chunk(shard_key, slot)
            if buffered is not None:
                if buffered[0] is not None:
                    out[key] = buffered[0]
                continue
            per_shard = wanted.setdefault(layout.path, (layout, {}))[1]
            per_shard.setdefault(shard_key, []).append((slot, key))
        for layout, shards in wanted.values():
            slots = {s: [slot for slot, _ in pairs] for s, pairs in shards.items()}
            view = self._index_view(layout)
            reads = self.io.read_shards(layout, slots, view.get)
            for shard_key, read in reads.items():
                view.put(shard_key, read.index)
                for slot, key in shards[shard_key]:
                    if slot in read.chunks:
                        out[key] = check_chunk_size(layout, shard_key, slot, read.chunks[slot])
        for key in plain:
            with suppress(KeyError):
                out[key] = self._read_plain(key)
        return out

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        check_key(key)
        target = self.chunk_target(key)
        if target is None or not target[0].sharded:
            return key in self.base
        layout, coords = target
        shard_key, slot = layout.shard_of(coords)
        buffered = self._buffered_chunk(shard_key, slot)
        if buffered is not None:
            return buffered[0] is not None
        index = self.read_index(layout, shard_key)
        return index is not None and index.get(slot) is not None

    # -- writes ------------------------------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        self.setitems({key: value})

    def setitems(self, values: Mapping[str, Any]) -> None:
        """Write many keys: chunks grouped by shard, each shard written once.

        Array metadata in ``values`` is written first, so chunks in the same batch land
        in the layout it sets, whatever the order of the mapping.
        """
        metas = {k for k in values if str(k).endswith(ARRAY_META_KEY)}
        if metas and len(metas) < len(values):
            self.setitems({k: values[k] for k in metas})
            values = {k: v for k, v in values.items() if k not in metas}
        plain: dict[str, Any] = {}
        updates: dict[str, tuple[ArrayLayout, Update]] = {}
        for key, value in values.items():
            check_key(key)
            target = self.chunk_target(key)
            if target is None and split_key(key)[1].replace(".", "").isdigit():
                # an array created by another writer since we last looked
                target = self.chunk_target(key, fresh=True)
            if target is None or not target[0].sharded:
                plain[key] = self._translate_plain(key, value)
                continue
            layout, coords = target
            shard_key, slot = layout.shard_of(coords)
            updates.setdefault(shard_key, (layout, {}))[1][slot] = as_buffer(value)
        if plain:
            self._write_plain(self._v3.items_to_write(self.base, plain))
        if updates:
            self._apply(updates)

    def _translate_plain(self, key: str, value: Any) -> Any:
        """Return what the base store holds for ``key``; an array's layout may change only
        while no chunk data lies under it (see :meth:`_check_relayout`)."""
        parent, name = split_key(key)
        if name != ARRAY_META_KEY:
            return self._translate_for_write(key, value)
        try:
            before = self.layout(parent, fresh=True)
        except ShardingConfigError:  # unreadable: a repair, whose layout nothing contradicts
            self._set_layout(parent, None)
            return self._translate_for_write(key, value)
        stored = self._translate_for_write(key, value)
        try:
            self._check_relayout(parent, before, self.layout(parent))
        except ShardingConfigError:
            self._set_layout(parent, before)
            raise
        return stored

    def _check_relayout(
        self, path: str, before: ArrayLayout | None, after: ArrayLayout | None
    ) -> None:
        """Refuse a ``.zarray`` that would change how existing chunk objects are read.

        Why refuse rather than repack: chunks a copy wrote before their array's
        ``.zarray`` are plain objects whose keys are also the shard keys of the new
        layout; packing them when ``.zarray`` arrives would rewrite arbitrarily much data
        inside one metadata write and needs a journal to survive a crash halfway.
        ``zarr.copy_store`` writes keys sorted, so ``.zarray`` comes before its chunks.

        Raises
        ------
        ShardingConfigError
            If ``before`` or ``after`` is sharded, they store chunks differently and a
            chunk (or shard) object lies under ``path``.
        """
        if after is None or not (after.sharded or (before is not None and before.sharded)):
            return
        if before is not None and _data_token(before) == _data_token(after):
            return
        found = self._data_object_under(path)
        if found is None:
            return
        was = "plain chunks" if before is None or not before.sharded else "shards"
        now = f"shards of {after.cps} chunks" if after.sharded else "plain chunks"
        raise ShardingConfigError(
            path,
            f"{found!r} and maybe more objects were written as {was} before this .zarray, "
            f"which would make them read as {now}. Write an array's .zarray before its "
            "chunks (zarr.copy_store does), or remove what is under the array first "
            "(zarr.storage.rmdir, or overwrite=True)",
        )

    def _data_object_under(self, path: str) -> str | None:
        """Return the key of a chunk or shard object (or folder) under ``path``, if any."""
        listdir = getattr(self.base, "listdir", None)
        with suppress(KeyError, FileNotFoundError, NotADirectoryError):
            names = listdir(path) if listdir is not None else _listdir_from_keys(self.base, path)
            for name in names:
                if not name.replace(".", "").isdigit():
                    continue
                key = f"{path}/{name}" if path else name
                if any(f"{key}/{meta}" in self.base for meta in _NODE_KEYS):
                    continue  # a child group or array, not data of this one
                return key
        return None

    def _write_plain(self, items: Mapping[str, Any]) -> None:
        setitems = getattr(self.base, "setitems", None)
        if setitems is not None and len(items) > 1:
            setitems(dict(items))
        else:
            for key, value in items.items():
                self.base[key] = value

    def __delitem__(self, key: str) -> None:
        check_key(key)
        target = self.chunk_target(key)
        if target is None or not target[0].sharded:
            del self.base[key]
            parent, name = split_key(key)
            if name == ARRAY_META_KEY:
                self._drop_layout(parent)
            return
        if key not in self:
            raise KeyError(key)
        self.delitems([key])

    def delitems(self, keys: Iterable[str]) -> None:
        """Delete many keys; missing keys are ignored (as ``FSStore.delitems`` does)."""
        updates: dict[str, tuple[ArrayLayout, Update]] = {}
        for key in keys:
            check_key(key)
            target = self.chunk_target(key)
            if target is None or not target[0].sharded:
                with suppress(KeyError):
                    del self[key]
                continue
            layout, coords = target
            shard_key, slot = layout.shard_of(coords)
            updates.setdefault(shard_key, (layout, {}))[1][slot] = None
        if updates:
            self._apply(updates)

    # -- store protocol ----------------------------------------------------------------
    def is_readable(self) -> bool:
        return bool(self.base.is_readable()) if hasattr(self.base, "is_readable") else True

    def is_writeable(self) -> bool:
        return bool(self.base.is_writeable()) if hasattr(self.base, "is_writeable") else True

    def is_listable(self) -> bool:
        return bool(self.base.is_listable()) if hasattr(self.base, "is_listable") else True

    def is_erasable(self) -> bool:
        return bool(self.base.is_erasable()) if hasattr(self.base, "is_erasable") else True

    def close(self) -> None:
        self.flush()
        close = getattr(self.base, "close", None)
        if close is not None:
            close()

    def chunks_per_shard_for(self, path: str) -> ChunksPerShard | None:
        """Return the chunks per shard of the array at ``path`` (``None``: not sharded)."""
        layout = self.layout(path)
        return None if layout is None else layout.chunks_per_shard

    # -- rename ------------------------------------------------------------------------
    def rename(self, src_path: str, dst_path: str) -> None:
        """Move the array, group or key at ``src_path`` to ``dst_path`` (``Group.move``).

        Shards and stored metadata move as stored (see :mod:`shardedstore._rename`);
        consolidated metadata listing either path is updated.

        Raises
        ------
        RenameError
            If something exists at ``dst_path``, or it lies inside ``src_path``.
        KeyError
            If nothing is stored at ``src_path``.
        """
        src, dst = rename_paths(src_path, dst_path)
        if not self.is_erasable():
            raise NotImplementedError(f"{type(self.base).__name__} is not erasable: cannot rename")
        if self.holds(dst):
            raise RenameError(src, dst, f"{dst!r} exists")
        if not self.holds(src):
            raise KeyError(src)
        self.move_tree(src, dst)
        update_consolidated(
            self.base.__getitem__,
            self.base.__setitem__,
            src,
            dst,
            lambda: meta_documents(self.base.__getitem__, self._stored_keys_under(dst)),
        )

    def holds(self, path: str) -> bool:
        """Tell whether anything is stored at or under ``path`` (``""``: anything at all)."""
        if self._in_shards(path):
            return path in self or bool(self.listdir(path))
        if path and path in self.base:
            return True
        for name in zarr_listdir(self.base, path):  # folders left empty hold nothing
            if not is_temp_name(name) and self.holds(f"{path}/{name}" if path else name):
                return True
        return False

    def move_tree(self, src: str, dst: str) -> None:
        """Move what is stored at or under ``src`` to ``dst`` (checked, normalised paths).

        Stored objects move as they are, by the base store's own ``rename`` if it has
        one. Only a path inside a sharded array's chunks (a chunk key, a chunk folder)
        moves chunk by chunk, as the logical keys it holds.
        """
        self.flush()
        try:
            if self._in_shards(src) or self._in_shards(dst):
                self._move_chunks(src, dst)
            elif (rename := own_rename(self.base)) is not None:
                if zarr_listdir(self.base, dst):
                    zarr_rmdir(self.base, dst)  # folders left empty: os.rename cannot replace
                rename(src, dst)
            else:
                move_stored_keys(self.base, src, dst)
        finally:
            self.forget_cached(src)
            self.forget_cached(dst)

    def forget_cached(self, path: str) -> None:
        """Drop cached layouts, chunk locations and indexes at or under ``path``."""
        self._forget_layouts(path)
        self._forget_indexes(path)

    def _in_shards(self, path: str) -> bool:
        target = self.chunk_target(path) if path else None
        if target is not None:
            return target[0].sharded
        layout = self._array_around(path)
        return layout is not None and layout.path != path

    def _stored_keys_under(self, path: str) -> list[str]:
        return [k for k in self.base if is_under(k, path)]

    def _move_chunks(self, src: str, dst: str) -> None:
        # the destination's .zarray first (its chunks land in its layout); delete chunks first
        keys = sorted((k for k in self.keys() if is_under(k, src)), key=_not_array_meta)
        for key in keys:
            self[dst + key[len(src) :]] = self[key]
        self.delitems(list(reversed(keys)))


def _not_array_meta(key: str) -> bool:
    return split_key(key)[1] != ARRAY_META_KEY
