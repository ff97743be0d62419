"""Compressed Morton (Z-order) numbering of the chunk slots inside a shard.

A shard stores its chunks in the order of their compressed Morton code, the
order zarr-python 3 and neuroglancer use: the bits of the coordinates are
interleaved, dimension 0 taking the least significant bit, and a dimension stops
contributing bits once its extent is exhausted (``ceil(log2(n))`` bits). For
``(4, 4, 2)`` chunks per shard the order starts ``(0,0,0) (1,0,0) (0,1,0)
(1,1,0) (0,0,1)``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

__all__ = ["morton_code", "morton_order"]


def _bits_per_dim(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(math.log2(n)) if n > 1 else 0 for n in shape)


def morton_code(coords: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Return the compressed Morton code of ``coords`` in a grid of ``shape``.

    Examples
    --------
    >>> [morton_code(c, (4, 4, 2)) for c in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]]
    [0, 1, 2, 4]
    """
    bits = _bits_per_dim(shape)
    code = 0
    out_bit = 0
    for coord_bit in range(max(bits, default=0)):
        for dim, nbits in enumerate(bits):
            if coord_bit < nbits:
                code |= ((coords[dim] >> coord_bit) & 1) << out_bit
                out_bit += 1
    return code


@functools.lru_cache(maxsize=64)
def morton_order(shape: tuple[int, ...]) -> npt.NDArray[np.intp]:
    """Return the C-order slot numbers of a grid of ``shape``, in Morton order.

    The result is cached per shape and read-only.

    Examples
    --------
    >>> morton_order((2, 3)).tolist()
    [0, 3, 1, 4, 2, 5]
    """
    bits = _bits_per_dim(shape)
    coords = np.indices(shape, dtype=np.int64).reshape(len(shape), math.prod(shape))
    codes = np.zeros(math.prod(shape), dtype=np.int64)
    out_bit = 0
    for coord_bit in range(max(bits, default=0)):
        for dim, nbits in enumerate(bits):
            if coord_bit < nbits:
                codes |= ((coords[dim] >> coord_bit) & 1) << out_bit
                out_bit += 1
    order = np.argsort(codes, kind="stable").astype(np.intp)
    order.flags.writeable = False
    return order
