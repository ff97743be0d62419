"""Hypothesis profiles and strategies shared by the property tests.

Profiles: the default runs ~40 examples per property (fast tier); ``HYPOTHESIS_PROFILE=ci``
derandomises and keeps that size; ``HYPOTHESIS_PROFILE=thorough`` runs ten times more.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numcodecs
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.function_scoped_fixture,  # only the slow-tier switch; it holds no state
]

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, suppress_health_check=_HEALTH
)
settings.register_profile(
    "thorough", max_examples=400, deadline=None, suppress_health_check=_HEALTH
)
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=_HEALTH)

_PROFILE = os.environ.get("HYPOTHESIS_PROFILE")
_BASE = (
    settings.get_profile(_PROFILE)
    if _PROFILE
    else settings(max_examples=40, deadline=None, suppress_health_check=_HEALTH)
)


def prop_settings(fraction: float = 1.0) -> settings:
    """Return the settings of a property test running ``fraction`` of the profile's examples."""
    return settings(
        _BASE,
        max_examples=max(1, round(_BASE.max_examples * fraction)),
        deadline=None,
        suppress_health_check=_HEALTH,
    )


# -- dtypes -----------------------------------------------------------------------------------

NUMERIC_DTYPES = ["|i1", "<u2", ">i4", "<i8", "<f4", ">f8", "<f8", "|b1", "<c8", ">c16"]
TIME_DTYPES = ["<M8[s]", "<M8[ns]", "<m8[ms]"]
STRING_DTYPES = ["<U3", "|S4"]
STRUCTURED_DTYPES = [
    [("a", "<i2"), ("b", "<f4")],
    [("x", "|u1"), ("y", ">f8", (2,))],
]
OBJECT_CODECS = ["vlen-utf8", "json", "msgpack2"]


def object_codec(name: str) -> Any:
    return {
        "vlen-utf8": numcodecs.VLenUTF8,
        "json": numcodecs.JSON,
        "msgpack2": numcodecs.MsgPack,
    }[name]()


@dataclass
class ArraySpec:
    """Everything ``zarr.open_array`` needs to create one array, plus its sharding."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    chunks_per_shard: tuple[int, ...]
    dtype: Any
    object_codec: str | None = None
    fill_value: Any = 0
    compressor: Any = None
    filters: list[Any] | None = None
    order: str = "C"
    separator: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype)

    def open_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "shape": self.shape,
            "chunks": self.chunks,
            "dtype": self.dtype,
            "compressor": self.compressor,
            "filters": self.filters,
            "order": self.order,
            "fill_value": self.fill_value,
        }
        if self.object_codec is not None:
            kwargs["object_codec"] = object_codec(self.object_codec)
        if self.separator is not None:
            kwargs["dimension_separator"] = self.separator
        return kwargs


# -- geometry ---------------------------------------------------------------------------------

_MAX_EXTENT = {0: 1, 1: 40, 2: 14, 3: 7, 4: 4, 5: 3, 6: 3}
MAX_CHUNKS = 48


@st.composite
def geometries(
    draw: st.DrawFn, min_dims: int = 0, max_dims: int = 6
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Draw ``(shape, chunks, chunks per shard)``; shapes need not be multiples of either."""
    ndim = draw(st.integers(min_dims, max_dims))
    extent = _MAX_EXTENT[ndim]
    shape = tuple(draw(st.integers(1, extent)) for _ in range(ndim))
    chunks = [draw(st.integers(1, s)) for s in shape]
    # keep the number of chunks small: zarr encodes every chunk in Python
    while math.prod(-(-s // c) for s, c in zip(shape, chunks, strict=True)) > MAX_CHUNKS:
        grid = [-(-s // c) for s, c in zip(shape, chunks, strict=True)]
        d = grid.index(max(grid))
        chunks[d] = min(shape[d], chunks[d] * 2)
    cps = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    return shape, tuple(chunks), cps


# -- codecs -----------------------------------------------------------------------------------

compressors = st.one_of(
    st.none(),
    st.builds(
        numcodecs.Blosc,
        cname=st.sampled_from(["lz4", "zstd", "blosclz", "zlib"]),
        clevel=st.integers(0, 5),
        shuffle=st.sampled_from(
            [numcodecs.Blosc.NOSHUFFLE, numcodecs.Blosc.SHUFFLE, numcodecs.Blosc.BITSHUFFLE, -1]
        ),
    ),
    st.builds(numcodecs.Zstd, level=st.integers(1, 3)),
    st.builds(numcodecs.GZip, level=st.integers(1, 3)),
    st.builds(numcodecs.LZ4),
    st.builds(numcodecs.Zlib, level=st.integers(1, 3)),
    st.builds(numcodecs.BZ2, level=st.integers(1, 3)),
)


def _filters_for(dtype: np.dtype[Any]) -> st.SearchStrategy[list[Any] | None]:
    options: list[st.SearchStrategy[list[Any] | None]] = [st.none()]
    if dtype.kind in "iu":
        options.append(st.just([numcodecs.Delta(dtype=dtype.str)]))
        wider = np.dtype(f"{dtype.byteorder if dtype.byteorder in '<>' else '<'}i8")
        options.append(st.just([numcodecs.AsType(encode_dtype=wider.str, decode_dtype=dtype.str)]))
    if dtype.kind == "f":
        options.append(st.just([numcodecs.Delta(dtype=dtype.str)]))
        options.append(
            st.integers(1, 4).map(lambda d: [numcodecs.Quantize(digits=d, dtype=dtype.str)])
        )
        if dtype.itemsize == 4:
            options.append(st.just([numcodecs.AsType(encode_dtype="<f8", decode_dtype=dtype.str)]))
    return st.one_of(*options)


# -- whole specs ------------------------------------------------------------------------------


@st.composite
def array_specs(
    draw: st.DrawFn,
    min_dims: int = 0,
    max_dims: int = 6,
    kinds: tuple[str, ...] = ("numeric", "time", "string", "structured", "object"),
    separators: tuple[str | None, ...] = (None, ".", "/"),
) -> ArraySpec:
    """Draw an array: geometry, dtype, fill value, codecs, order and separator."""
    shape, chunks, cps = draw(geometries(min_dims, max_dims))
    kind = draw(st.sampled_from(kinds))
    codec_name = None
    dtype: Any
    if kind == "numeric":
        dtype = draw(st.sampled_from(NUMERIC_DTYPES))
    elif kind == "time":
        dtype = draw(st.sampled_from(TIME_DTYPES))
    elif kind == "string":
        dtype = draw(st.sampled_from(STRING_DTYPES))
    elif kind == "structured":
        dtype = draw(st.sampled_from(STRUCTURED_DTYPES))
    else:
        dtype = object
        # numcodecs' JSON and MsgPack cannot encode a 0-d chunk (list.extend on a scalar)
        codec_name = draw(st.sampled_from(OBJECT_CODECS if shape else OBJECT_CODECS[:1]))
    np_dtype = np.dtype(dtype)
    fill_value = draw(fill_values(np_dtype, codec_name))
    filters = None if kind == "object" else draw(_filters_for(np_dtype))
    return ArraySpec(
        shape=shape,
        chunks=chunks,
        chunks_per_shard=cps,
        dtype=dtype,
        object_codec=codec_name,
        fill_value=fill_value,
        compressor=draw(compressors),
        filters=filters,
        order=draw(st.sampled_from(["C", "F"])),
        separator=draw(st.sampled_from(separators)),
    )


def fill_values(dtype: np.dtype[Any], codec_name: str | None) -> st.SearchStrategy[Any]:
    """Fill values that zarr 2 accepts for ``dtype`` (``None`` included)."""
    if dtype.kind == "O":
        if codec_name == "vlen-utf8":
            return st.sampled_from([None, "", "fill"])
        return st.sampled_from([None, 0])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return st.one_of(st.none(), st.just(0), st.integers(int(info.min), int(info.max)))
    if dtype.kind == "f":
        return st.sampled_from([None, 0.0, float("nan"), -1.5, float("inf")])
    if dtype.kind == "c":
        return st.sampled_from([None, 0, 1 + 2j])
    if dtype.kind == "b":
        return st.sampled_from([None, False, True])
    if dtype.kind in "Mm":
        return st.sampled_from([None, 0, 86400])
    if dtype.kind == "U":
        return st.sampled_from([None, "", "ab"])
    if dtype.kind == "S":
        return st.sampled_from([None, b"", b"xy"])
    return st.sampled_from([None, 0])


# -- values -----------------------------------------------------------------------------------

_ALPHABET = np.array(list("ab\u00e9\u4e2d\U0001f600 z0"))


def random_values(spec: ArraySpec, shape: tuple[int, ...], seed: int) -> np.ndarray[Any, Any]:
    """Return deterministic random values of ``spec``'s dtype (NaN and inf included)."""
    rng = np.random.default_rng(seed)
    dtype = spec.np_dtype
    n = math.prod(shape)
    if dtype.kind == "O":
        out = np.empty(n, dtype=object)
        for i in range(n):
            if spec.object_codec == "vlen-utf8":
                out[i] = "".join(rng.choice(_ALPHABET, size=int(rng.integers(0, 6))))
            elif rng.random() < 0.5:
                out[i] = int(rng.integers(-1000, 1000))
            else:
                out[i] = "".join(rng.choice(_ALPHABET, size=int(rng.integers(0, 4))))
        return out.reshape(shape)
    return _plain_values(dtype, n, rng).reshape(shape)


def _plain_values(dtype: np.dtype[Any], n: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    if dtype.fields is not None:
        out = np.zeros(n, dtype=dtype)
        for name in dtype.names or ():
            sub, _offset = dtype.fields[name][:2]
            base = sub.base
            count = math.prod(sub.shape)
            out[name] = _plain_values(base, n * count, rng).reshape((n, *sub.shape))
        return out
    if dtype.kind == "b":
        return rng.random(n) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max), size=n, endpoint=True).astype(dtype)
    if dtype.kind == "f":
        values = rng.normal(scale=100.0, size=n)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0])
        mask = rng.random(n) < 0.15
        values[mask] = rng.choice(specials, size=int(mask.sum()))
        return values.astype(dtype)
    if dtype.kind == "c":
        real = _plain_values(np.dtype("<f8"), n, rng)
        imag = _plain_values(np.dtype("<f8"), n, rng)
        return (real + 1j * imag).astype(dtype)
    if dtype.kind in "Mm":
        ints = rng.integers(-(2**40), 2**40, size=n)
        ints[rng.random(n) < 0.1] = np.iinfo(np.int64).min  # NaT
        return ints.astype("<i8").view(dtype.newbyteorder("<")).astype(dtype)
    if dtype.kind == "U":
        return np.array(
            ["".join(rng.choice(_ALPHABET, size=int(rng.integers(0, 4)))) for _ in range(n)],
            dtype=dtype,
        )
    if dtype.kind == "S":
        return np.array(
            [bytes(rng.integers(0, 256, size=int(rng.integers(0, 5))).tolist()) for _ in range(n)],
            dtype=dtype,
        )
    raise NotImplementedError(dtype)


def assert_same_values(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    """Assert equal shape, dtype and values (bit for bit; NaN payloads included)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.dtype.kind == "O":
        assert actual.tolist() == expected.tolist()
    else:
        assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()
