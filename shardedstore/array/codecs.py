"""Chunk decoding and encoding exactly as zarr 2's ``Array`` does them, usable from threads.

The codec objects (compressor, filters) are zarr's own, read from the array's metadata
by ``zarr.Array``; numcodecs' codecs hold no per-call state, so one instance serves every
thread.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Final

import numcodecs
import numpy as np
import numpy.typing as npt
import zarr
from numcodecs import blosc
from numcodecs.compat import ensure_ndarray_like
from zarr.util import all_equal, is_total_slice

from shardedstore.format.shard import Chunk
from shardedstore.sharding.writes import as_buffer

__all__ = ["RUN_CHUNKS", "ChunkCodec", "Item"]

#: one chunk of a selection: its coordinates, its part of the chunk, its part of the output
Item = tuple[tuple[int, ...], tuple[Any, ...], tuple[Any, ...]]

#: whole chunks side by side along the last dimension decoded together (see
#: :meth:`ChunkCodec.decode_batch`)
RUN_CHUNKS: Final = 8

#: compressors whose ``encode`` returns new memory (so a chunk buffer may be reused)
_COPYING: tuple[type, ...] = tuple(
    codec
    for name in ("Blosc", "Zstd", "LZ4", "Zlib", "GZip", "BZ2", "LZMA")
    if isinstance(codec := getattr(numcodecs, name, None), type)
)


class ChunkCodec:
    """Decode chunks into a region of an output array, and encode chunks, as ``zarr.Array``.

    Parameters
    ----------
    array
        The zarr array whose metadata (compressor, filters, dtype, chunks, order,
        fill value, ``write_empty_chunks``) is used.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.compressor = array._compressor
        self.filters = list(array._filters or ())
        self.dtype: np.dtype[Any] = array._dtype
        self.chunks: tuple[int, ...] = tuple(array._chunks)
        self.order: str = array._order
        self.fill_value: Any = array._fill_value
        self.write_empty_chunks: bool = bool(array._write_empty_chunks)
        #: whether chunks are stored as they are (no compressor, no filters): only copied
        self.raw = self.compressor is None and not self.filters
        #: bytes of one decoded chunk
        self.chunk_nbytes: int = math.prod(self.chunks) * self.dtype.itemsize
        self._local = threading.local()
        #: ``chunk_sel`` of a whole chunk as zarr's indexers write it
        self._whole = tuple(slice(0, n, 1) for n in self.chunks)
        self._decode_to = self._decoder_into()
        #: whether the compressor's output never shares memory with its input
        self._copies = isinstance(self.compressor, _COPYING)
        #: whether runs of chunks are decoded together (:meth:`decode_batch`)
        self._runs = (
            self._decode_to is not None
            and not self.filters
            and self.order == "C"
            and len(self.chunks) >= 2
        )

    def _decoder_into(self) -> Any:
        """Return ``f(cdata, out)`` decoding into ``out``: Blosc's own function for Blosc
        (the same decompression without ``Blosc.decode``'s two buffer conversions per chunk)."""
        if type(self.compressor) is blosc.Blosc:
            return blosc.decompress
        return None if self.compressor is None else self.compressor.decode

    def _scratch(self) -> npt.NDArray[Any]:
        """Return this thread's chunk-sized buffer for decoding before a strided copy."""
        return self._thread_buffer("scratch", self.chunks, self.order)

    def _thread_buffer(self, name: str, shape: tuple[int, ...], order: str) -> npt.NDArray[Any]:
        """Return this thread's buffer ``name``, made on first use and then reused: a fresh
        buffer per chunk costs a page fault per page once the allocator hands freed
        memory back."""
        buffer: npt.NDArray[Any] | None = getattr(self._local, name, None)
        if buffer is None:
            buffer = np.empty(shape, dtype=self.dtype, order=order)  # type: ignore[call-overload]
            setattr(self._local, name, buffer)
        return buffer

    def is_whole(self, chunk_sel: tuple[Any, ...]) -> bool:
        """Tell whether ``chunk_sel`` (from zarr's indexer) selects the whole chunk."""
        return chunk_sel == self._whole or bool(is_total_slice(chunk_sel, self.chunks))

    # -- reads ---------------------------------------------------------------------------
    def decode(self, cdata: Any) -> npt.NDArray[Any]:
        """Return the chunk encoded in ``cdata`` (``zarr.Array._decode_chunk``)."""
        chunk = self.compressor.decode(cdata) if self.compressor else cdata
        for f in reversed(self.filters):
            chunk = f.decode(chunk)
        array = ensure_ndarray_like(chunk).view(self.dtype)
        return array.reshape(-1, order="A").reshape(self.chunks, order=self.order)  # type: ignore[no-any-return]

    def decode_into(
        self,
        cdata: Any,
        out: npt.NDArray[Any],
        out_sel: tuple[Any, ...],
        chunk_sel: tuple[Any, ...],
    ) -> None:
        """Decode ``cdata`` and copy its ``chunk_sel`` into ``out[out_sel]``.

        A whole chunk landing on a contiguous region of ``out`` is decompressed there
        directly, with no intermediate copy (as zarr does); elsewhere a whole chunk is
        decompressed into this thread's reused buffer and copied once.
        """
        dest = out[out_sel]
        if not self.filters and dest.shape == self.chunks and self.is_whole(chunk_sel):
            if self._decode_to is None:
                raw = ensure_ndarray_like(cdata).view(self.dtype)
                np.copyto(dest, raw.reshape(self.chunks, order=self.order))
            elif dest.flags.c_contiguous if self.order == "C" else dest.flags.f_contiguous:
                self._decode_to(cdata, dest)
            else:
                scratch = self._scratch()
                self._decode_to(cdata, scratch)
                np.copyto(dest, scratch)
            return
        out[out_sel] = self.decode(cdata)[chunk_sel]

    def decode_batch(self, items: list[Item], data: list[Any], out: npt.NDArray[Any]) -> None:
        """Decode each chunk's bytes (``None``: absent, filled) into its part of ``out``.

        Whole chunks side by side along the last dimension of a C-order output (up to
        ``RUN_CHUNKS``) are decoded into one scratch buffer and copied at once: the copy
        writes rows as wide as the run instead of one chunk's row (64 bytes for 32^3
        uint16 chunks), which is what the copy's speed depends on (measured: decoding a
        32 MiB shard of such Blosc chunks on two threads, 98 ms in runs of 8 against 160
        one by one; runs of 4, as in a Morton-ordered batch, 124).
        """
        rows: dict[tuple[int, ...], list[tuple[int, Any, Item]]] = {}
        for item, cdata in zip(items, data, strict=True):
            if cdata is None:
                self.fill(out, item[2])
            elif self._runs and self._in_run(item, out):
                out_sel = item[2]
                key = tuple(s.start for s in out_sel[:-1])
                rows.setdefault(key, []).append((out_sel[-1].start, cdata, item))
            else:
                self.decode_into(cdata, out, item[2], item[1])
        last = self.chunks[-1]
        for row in rows.values():
            row.sort(key=lambda r: r[0])
            run: list[tuple[int, Any, Item]] = []
            for entry in row:
                if run and (entry[0] != run[-1][0] + last or len(run) == RUN_CHUNKS):
                    self._decode_run(run, out)
                    run = []
                run.append(entry)
            self._decode_run(run, out)

    def _in_run(self, item: Item, out: npt.NDArray[Any]) -> bool:
        """Tell whether ``item`` is a whole chunk filling a chunk-shaped block of ``out``
        (not when an integer index dropped a dimension: it may select a whole chunk of 1)."""
        _, chunk_sel, out_sel = item
        if not len(out_sel) == out.ndim == len(self.chunks) or not self.is_whole(chunk_sel):
            return False
        for s, n in zip(out_sel, self.chunks, strict=True):
            if not isinstance(s, slice) or s.step not in (None, 1) or s.stop - s.start != n:
                return False
        return True

    def _decode_run(self, run: list[tuple[int, Any, Item]], out: npt.NDArray[Any]) -> None:
        """Decode the chunks of ``run`` (side by side along the last dimension) into
        ``out``: one by one into this thread's run buffer, then one copy."""
        if len(run) == 1:
            _, cdata, (_, chunk_sel, out_sel) = run[0]
            self.decode_into(cdata, out, out_sel, chunk_sel)
            return
        scratch = self._thread_buffer("run", (RUN_CHUNKS, *self.chunks), "C")
        for q, (_, cdata, _) in enumerate(run):
            self._decode_to(cdata, scratch[q])
        m, ndim, last = len(run), len(self.chunks), self.chunks[-1]
        out_sel = run[0][2][2]
        dest = out[(*out_sel[:-1], slice(out_sel[-1].start, out_sel[-1].start + m * last))]
        dest = dest.view()
        dest.shape = (*self.chunks[:-1], m, last)  # raises rather than copy: a view or nothing
        np.copyto(dest, scratch[:m].transpose(*range(1, ndim), 0, ndim))

    def fill(self, out: npt.NDArray[Any], out_sel: tuple[Any, ...]) -> None:
        """Fill ``out[out_sel]`` as zarr does for an absent chunk."""
        if self.fill_value is not None:
            out[out_sel] = self.fill_value
        else:  # zarr leaves such regions uninitialised: ours are zeros
            out[out_sel] = np.zeros((), dtype=self.dtype)

    # -- writes --------------------------------------------------------------------------
    def empty_chunk(self) -> npt.NDArray[Any]:
        """Return a chunk holding the fill value (zeros without one), as zarr starts one."""
        chunk = np.empty(self.chunks, dtype=self.dtype, order=self.order)  # type: ignore[call-overload]
        if self.fill_value is not None:
            chunk.fill(self.fill_value)
        else:
            chunk[...] = np.zeros((), dtype=self.dtype)
        return chunk  # type: ignore[no-any-return]

    def new_chunks(self, n: int) -> npt.NDArray[Any] | None:
        """Return ``n`` uninitialised chunks in one allocation (``None`` where chunks are
        encoded into new bytes and this thread's scratch chunk serves them all).

        A write stores such chunks themselves (no compressor, or one that may return its
        input). One allocation per shard instead of one per chunk: a fresh chunk-sized
        buffer costs its page faults each time the allocator has handed freed memory
        back (measured: encoding a shard of 512 raw 64 KiB chunks, 26-37 ms against 9.5).
        """
        if self._copies and not self.filters:
            return None
        if self.order == "C":
            return np.empty((n, *self.chunks), dtype=self.dtype)
        return np.empty((n, *self.chunks[::-1]), dtype=self.dtype).transpose(
            0, *range(len(self.chunks), 0, -1)
        )

    def merged(
        self,
        old: Any,
        chunk_sel: tuple[Any, ...],
        value: npt.NDArray[Any],
        fresh: npt.NDArray[Any] | None = None,
    ) -> npt.NDArray[Any]:
        """Return the chunk that ``value`` written at ``chunk_sel`` makes of ``old``.

        ``old`` is the stored chunk's bytes, or ``None`` if it is absent; ``fresh``, an
        unused chunk from :meth:`new_chunks` to fill when the whole chunk is written.
        """
        if self.is_whole(chunk_sel):
            if self._copies and not self.filters:  # encoded into new bytes: reuse
                chunk = self._scratch()
            elif fresh is not None:
                chunk = fresh
            else:  # the chunk itself may be stored: a new one
                chunk = np.empty(self.chunks, dtype=self.dtype, order=self.order)  # type: ignore[call-overload]
            chunk[chunk_sel] = value  # an integer may select all of a dimension of 1
            return chunk
        if old is None:
            chunk = self.empty_chunk()
        else:
            chunk = self.decode(old)
            if not chunk.flags.writeable:
                chunk = chunk.copy(order="K")
        chunk[chunk_sel] = value
        return chunk

    def encode(self, chunk: npt.NDArray[Any]) -> Chunk | None:
        """Return the stored bytes of ``chunk``, or ``None`` where zarr would delete it.

        zarr deletes a chunk holding only the fill value when the array was opened
        with ``write_empty_chunks=False``.
        """
        if not self.write_empty_chunks and all_equal(self.fill_value, chunk):
            return None
        data: Any = chunk
        if self.filters:
            for f in self.filters:
                data = f.encode(data)
            if ensure_ndarray_like(data).dtype == object:
                raise RuntimeError("cannot write object array without object codec")
        if self.compressor:
            data = self.compressor.encode(data)
        return as_buffer(data)
