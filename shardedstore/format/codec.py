"""``ShardingCodec``: the ``sharding_indexed`` codec, so plain zarr 2 reads and writes whole shards.

The stored ``.zarray`` of a sharded array (see :mod:`shardedstore.format.layout`) names the
shard shape as ``chunks`` and this codec as ``compressor``. Importing this module
registers the codec with numcodecs, so zarr 2 opening the *base* store directly
decodes each shard into its full, padded array and encodes one back into a valid
shard, byte-compatible with what :class:`shardedstore.ShardedStore` writes. Without
the import, zarr fails with ``codec not available`` rather than returning fill values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import numcodecs
import numpy as np
import numpy.typing as npt
from numcodecs.abc import Codec
from numcodecs.compat import (
    ensure_bytes,
    ensure_contiguous_ndarray,
    ensure_ndarray_like,
    ndarray_copy,
)
from zarr.meta import Metadata2

from shardedstore.errors import ShardCorruptionError, ShardingConfigError
from shardedstore.format.layout import CHECKSUM_KEY, CODEC_ID
from shardedstore.format.metadata import codec_checksums
from shardedstore.format.shard import (
    CHECKSUM_NBYTES,
    MAX_SLOTS,
    ShardIndex,
    build_shard,
    checksum_ok,
    parse_index_location,
)

__all__ = ["CODEC_KEY", "DecodedShard", "ShardingCodec"]

#: Stands in for the shard key in errors: a codec never learns which key it decodes.
CODEC_KEY: Final = "<sharding_indexed codec>"


def _shape(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise ValueError(f"{name} must be a list of positive ints, got {value!r}")
    return tuple(value)


def _check_codec_config(value: object, name: str) -> None:
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("id"), str)):
        raise ShardingConfigError(
            CODEC_KEY,
            f"field {name!r} must be a codec config (an object with an 'id') or null, "
            f"got {value!r}",
        )


class DecodedShard(np.ndarray):
    """A decoded shard that refuses to be read as another dtype or memory order.

    Why: a codec never sees the ``.zarray`` around it, yet zarr 2 views what
    :meth:`ShardingCodec.decode` returns as the ``.zarray``'s dtype and reshapes it in
    its order. Where those disagree with the codec's own (a ``.zarray`` edited by
    hand or by another tool), zarr would read other values than the store does.
    """

    expected_order: str = "C"

    def __array_finalize__(self, obj: Any) -> None:
        self.expected_order = getattr(obj, "expected_order", "C")

    def __repr__(self) -> str:
        return repr(np.asarray(self))

    def view(self, *args: Any, **kwargs: Any) -> Any:
        dtype = args[0] if args else kwargs.get("dtype")
        if dtype is not None and not (isinstance(dtype, type) and issubclass(dtype, np.ndarray)):
            wanted = np.dtype(dtype)
            if wanted != self.dtype:
                raise ShardingConfigError(
                    CODEC_KEY,
                    f"field 'dtype': the array reads the shard as {wanted.str!r} but its "
                    f"sharding_indexed config says {self.dtype.str!r}; they must agree",
                )
        return super().view(*args, **kwargs)

    def reshape(self, *args: Any, order: Any = "C", **kwargs: Any) -> Any:
        if order != "A" and order != self.expected_order and self.ndim and len(args) > 0:
            shape = args[0] if len(args) == 1 else args
            if not isinstance(shape, int) and sum(1 for n in shape if n != 1) > 1:
                raise ShardingConfigError(
                    CODEC_KEY,
                    f"field 'order': the array reads the shard in order {order!r} but its "
                    f"sharding_indexed config says {self.expected_order!r}; they must agree",
                )
        out = super().reshape(*args, order=order, **kwargs)
        return out if order == "A" else np.asarray(out)


class ShardingCodec(Codec):  # type: ignore[misc]  # numcodecs ships no type information
    """Encode a whole shard array to ``sharding_indexed`` bytes, and back.

    Parameters
    ----------
    chunk_shape
        Shape of one inner chunk, in elements.
    chunks_per_shard
        Number of inner chunks along each dimension of a shard.
    compressor, filters
        numcodecs configs of the inner chunks' compressor and filters, as in a
        zarr 2 ``.zarray`` (``None`` for none).
    dtype
        The array's dtype in zarr 2 JSON form (``"<i4"``, ``[["a", "<i4"]]``, ``"|O"``).
    order
        Memory order of the chunks, ``"C"`` or ``"F"``.
    fill_value
        The array's fill value in zarr 2 JSON form; ``None`` decodes absent chunks as zeros.
    index_location
        Whether the index follows (``"end"``) or precedes (``"start"``) the chunks.
    format_version
        Version of the shard layout; newer than this library's is refused.
    chunk_checksum
        ``"crc32c"``: each chunk ends with its CRC32C (format version 2), checked
        when decoding; ``None``: no chunk checksums.

    Raises
    ------
    ValueError
        If a parameter is malformed, ``format_version`` is newer than this library's,
        or ``chunk_checksum`` does not fit it.

    Examples
    --------
    >>> codec = ShardingCodec([2], [2], dtype="<u2", fill_value=0)
    >>> shard = codec.encode(np.array([1, 2, 0, 0], dtype="<u2"))
    >>> len(shard)  # one 4-byte chunk, the all-fill chunk absent, a 36-byte index
    40
    >>> codec.decode(shard).view("<u2")
    array([1, 2, 0, 0], dtype=uint16)
    """

    codec_id = CODEC_ID

    def __init__(
        self,
        chunk_shape: Sequence[int],
        chunks_per_shard: Sequence[int],
        compressor: dict[str, Any] | None = None,
        filters: Sequence[dict[str, Any]] | None = None,
        dtype: Any = "<u1",
        order: str = "C",
        fill_value: Any = None,
        index_location: str = "end",
        format_version: int = 1,
        chunk_checksum: str | None = None,
    ) -> None:
        versioned: dict[str, Any] = {"format_version": format_version}
        if chunk_checksum is not None:
            versioned[CHECKSUM_KEY] = chunk_checksum
        try:
            self._checksums = codec_checksums(versioned, CODEC_KEY)
        except ShardingConfigError as err:
            raise ValueError(f"sharding_indexed {err.reason}") from err
        self._chunk_shape = _shape(chunk_shape, "chunk_shape")
        self._cps = _shape(chunks_per_shard, "chunks_per_shard")
        if len(self._cps) != len(self._chunk_shape):
            raise ValueError(f"chunks_per_shard {self._cps} does not match {self._chunk_shape}")
        if math.prod(self._cps) > MAX_SLOTS:
            raise ValueError(f"chunks_per_shard {self._cps} has more than {MAX_SLOTS} slots")
        if order != "C" and order != "F":
            raise ShardingConfigError(CODEC_KEY, f"field 'order' must be 'C' or 'F', got {order!r}")
        self._order: Literal["C", "F"] = "C" if order == "C" else "F"
        try:
            self._location = parse_index_location(index_location)
        except ValueError as e:
            raise ShardingConfigError(CODEC_KEY, f"field 'index_location': {e}") from None
        self._dtype: np.dtype[Any] = Metadata2.decode_dtype(dtype)
        _check_codec_config(compressor, "compressor")
        if filters is not None and not isinstance(filters, list | tuple):
            raise ShardingConfigError(
                CODEC_KEY, f"field 'filters' must be a list or null, got {filters!r}"
            )
        for f in filters or ():
            _check_codec_config(f, "filters")
        self._compressor = None if compressor is None else numcodecs.get_codec(compressor)
        self._filters = [numcodecs.get_codec(f) for f in filters or ()]
        object_codec = self._filters[0] if self._filters else None
        self._fill = Metadata2.decode_fill_value(fill_value, self._dtype, object_codec)
        self._config: dict[str, Any] = {
            "id": CODEC_ID,
            "chunk_shape": list(self._chunk_shape),
            "chunks_per_shard": list(self._cps),
            "compressor": compressor,
            "filters": None if filters is None else list(filters),
            "dtype": dtype,
            "order": order,
            "fill_value": fill_value,
            "index_location": self._location,
            **versioned,
        }
        self._n_slots = math.prod(self._cps)
        self._shard_shape = tuple(c * n for c, n in zip(self._chunk_shape, self._cps, strict=True))
        self._fill_bytes: bytes | None = None
        if self._fill is not None and self._dtype != object:
            self._fill_bytes = np.full(self._chunk_shape, self._fill, self._dtype).tobytes()

    def get_config(self) -> dict[str, Any]:
        """Return the config exactly as stored in the ``.zarray`` ``compressor`` field."""
        return dict(self._config)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._config.items() if k != "id")
        return f"{type(self).__name__}({params})"

    def _region(self, slot: int) -> tuple[slice, ...]:
        coords = np.unravel_index(slot, self._cps)
        return tuple(
            slice(int(c) * n, (int(c) + 1) * n)
            for c, n in zip(coords, self._chunk_shape, strict=True)
        )

    def _empty_shard(self) -> npt.NDArray[Any]:
        if self._fill is None:
            return np.zeros(self._shard_shape, dtype=self._dtype, order=self._order)
        return np.full(self._shard_shape, self._fill, dtype=self._dtype, order=self._order)

    def _read_index(self, data: memoryview) -> ShardIndex:
        return ShardIndex.from_shard(data, self._n_slots, self._location, CODEC_KEY)

    def _decode_chunk(self, slot: int, cdata: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        """Decode one inner chunk exactly as zarr 2's ``Array._decode_chunk`` does."""
        if not len(cdata):  # never hand a compressor an empty slice: Blosc reads past it
            raise ShardCorruptionError(CODEC_KEY, f"slot {slot} is present but holds 0 bytes")
        try:
            chunk: Any = cdata if self._compressor is None else self._compressor.decode(cdata)
            for f in reversed(self._filters):
                chunk = f.decode(chunk)
            chunk = ensure_ndarray_like(chunk)
        except Exception as e:
            raise ShardCorruptionError(CODEC_KEY, f"slot {slot} does not decode: {e}") from e
        if self._dtype != object:
            if chunk.nbytes != math.prod(self._chunk_shape) * self._dtype.itemsize:
                raise ShardCorruptionError(
                    CODEC_KEY,
                    f"slot {slot} decodes to {chunk.nbytes} bytes, expected "
                    f"{math.prod(self._chunk_shape) * self._dtype.itemsize} for {self._chunk_shape}",
                )
            chunk = chunk.view(self._dtype)
        elif chunk.dtype != object:
            raise RuntimeError("cannot read object array without object codec")
        flat = chunk.reshape(-1, order="A")
        if flat.size != math.prod(self._chunk_shape):
            raise ShardCorruptionError(
                CODEC_KEY,
                f"slot {slot} decodes to {flat.size} items, expected {self._chunk_shape}",
            )
        return flat.reshape(self._chunk_shape, order=self._order)  # type: ignore[no-any-return]

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Decode a shard into its full array, flat in the array's memory order.

        Absent chunks hold the fill value. If ``out`` is given, the values are
        copied into it (as numcodecs' ``ndarray_copy`` does) and it is returned.

        Raises
        ------
        ShardCorruptionError
            If the index is truncated, fails its checksum or points outside the
            data, or a chunk does not decode to ``chunk_shape`` items.
        """
        if out is not None:
            self._check_destination(ensure_ndarray_like(out))
        data = ensure_contiguous_ndarray(buf)
        index = self._read_index(memoryview(data))
        shard = self._empty_shard()
        for slot in np.flatnonzero(index.present()).tolist():
            offset, nbytes = index.entries[slot]
            cdata = data[int(offset) : int(offset) + int(nbytes)]
            if self._checksums:
                if not checksum_ok(cdata, 0, len(cdata)):
                    raise ShardCorruptionError(CODEC_KEY, f"slot {slot} fails its CRC32C checksum")
                cdata = cdata[:-CHECKSUM_NBYTES]
            shard[self._region(slot)] = self._decode_chunk(slot, cdata)
        flat = shard.reshape(-1, order=self._order)
        if out is not None:
            return ndarray_copy(flat, out)
        if self._dtype == object:
            return flat
        checked = flat.view(DecodedShard)
        checked.expected_order = self._order
        return checked

    def _check_destination(self, out: Any) -> None:
        """Refuse to decode into an array of another dtype or memory order than the config's."""
        if self._dtype != object and out.dtype != self._dtype:
            raise ShardingConfigError(
                CODEC_KEY,
                f"field 'dtype': the array reads the shard as {out.dtype.str!r} but its "
                f"sharding_indexed config says {self._dtype.str!r}; they must agree",
            )
        contiguous = out.flags.c_contiguous if self._order == "C" else out.flags.f_contiguous
        if out.ndim > 1 and not contiguous:
            raise ShardingConfigError(
                CODEC_KEY,
                f"field 'order': the array's memory order is not the sharding_indexed "
                f"config's {self._order!r}; they must agree",
            )

    def _shard_array(self, buf: Any) -> npt.NDArray[Any]:
        arr = np.asarray(buf) if self._dtype == object else ensure_ndarray_like(buf)
        flat = arr.reshape(-1, order="A")
        if self._dtype != object:
            flat = flat.view(self._dtype)
        if flat.size != math.prod(self._shard_shape):
            raise ValueError(f"{flat.size} items do not fill a shard of shape {self._shard_shape}")
        return flat.reshape(self._shard_shape, order=self._order)

    def _is_fill(self, chunk: npt.NDArray[Any]) -> bool:
        """Tell whether every item of ``chunk`` is the fill value, so the chunk may be absent.

        Why bytes: comparing the encoded items matches NaN with NaN and never
        confuses ``-0.0`` with ``0.0``, so an absent chunk always decodes to exactly
        what was written. Objects must equal the fill value and be of its type (an
        ``""`` is falsy, but is not a fill value of ``0``).
        """
        if self._fill is None:
            return False
        if self._fill_bytes is not None:
            return chunk.tobytes(order="A") == self._fill_bytes
        fill = self._fill
        return all(type(v) is type(fill) and v == fill for v in chunk.flat)

    def _encode_chunk(self, chunk: npt.NDArray[Any]) -> bytes:
        """Encode one inner chunk exactly as zarr 2's ``Array._encode_chunk`` does."""
        data: Any = chunk
        for f in self._filters:
            data = f.encode(data)
        if ensure_ndarray_like(data).dtype == object:
            raise RuntimeError("cannot write object array without object codec")
        if self._compressor is not None:
            data = self._compressor.encode(data)
        return ensure_bytes(data)  # type: ignore[no-any-return]

    def encode(self, buf: Any) -> bytes:
        """Encode a full shard array into shard bytes.

        Chunks whose every item equals the fill value (NaN matching NaN) are left
        absent, as Zarr v3 writers do; with no fill value every chunk is stored.
        """
        shard = self._shard_array(buf)
        contiguous = np.ascontiguousarray if self._order == "C" else np.asfortranarray
        chunks: dict[int, bytes] = {}
        for slot in range(self._n_slots):
            chunk = contiguous(shard[self._region(slot)])
            if not self._is_fill(chunk):
                chunks[slot] = self._encode_chunk(chunk)
        return build_shard(
            chunks, self._n_slots, self._cps, self._location, checksums=self._checksums
        )


numcodecs.register_codec(ShardingCodec)
