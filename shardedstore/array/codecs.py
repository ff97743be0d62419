"""Chunk decoding and encoding exactly as zarr 2's ``Array`` does them, usable from threads.

The codec objects (compressor, filters) are zarr's own, read from the array's metadata
by ``zarr.Array``; numcodecs' codecs hold no per-call state, so one instance serves every
thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from numcodecs.compat import ensure_ndarray_like
from zarr.util import all_equal, is_total_slice

from shardedstore.format.shard import Chunk
from shardedstore.sharding.writes import as_buffer

__all__ = ["ChunkCodec"]


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
        directly, with no intermediate copy (as zarr does).
        """
        if not self.filters and is_total_slice(chunk_sel, self.chunks):
            dest = out[out_sel]
            contiguous = dest.flags.c_contiguous if self.order == "C" else dest.flags.f_contiguous
            if contiguous and dest.shape == self.chunks:
                if self.compressor:
                    self.compressor.decode(cdata, dest)
                else:
                    raw = ensure_ndarray_like(cdata).view(self.dtype)
                    np.copyto(dest, raw.reshape(self.chunks, order=self.order))
                return
        out[out_sel] = self.decode(cdata)[chunk_sel]

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

    def merged(
        self, old: Any, chunk_sel: tuple[Any, ...], value: npt.NDArray[Any]
    ) -> npt.NDArray[Any]:
        """Return the chunk that ``value`` written at ``chunk_sel`` makes of ``old``.

        ``old`` is the stored chunk's bytes, or ``None`` if it is absent.
        """
        if is_total_slice(chunk_sel, self.chunks):
            chunk = np.empty(self.chunks, dtype=self.dtype, order=self.order)  # type: ignore[call-overload]
            chunk[chunk_sel] = value  # an integer may select all of a dimension of 1
            return chunk  # type: ignore[no-any-return]
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
        for f in self.filters:
            data = f.encode(data)
        if ensure_ndarray_like(data).dtype == object:
            raise RuntimeError("cannot write object array without object codec")
        if self.compressor:
            data = self.compressor.encode(data)
        return as_buffer(data)
