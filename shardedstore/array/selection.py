"""Numpy basic indexing on top of zarr's: negative steps and ``newaxis`` mapped to what zarr reads.

zarr 2's basic indexer takes integers, slices with positive steps and ``Ellipsis``. A
numpy selection is split into that *zarr selection* and a *view* that numpy applies
afterwards: a reversed slice for a negative step, ``None`` for a new axis.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Selection", "parse_selection"]


@dataclass(frozen=True)
class Selection:
    """A numpy basic selection as zarr reads it, and the view that makes numpy's result."""

    #: one integer or positive-step slice per dimension
    zarr: tuple[int | slice, ...]
    #: applied to zarr's result: ``None`` (new axis) or ``slice(None)``/``slice(None, None, -1)``
    view: tuple[slice | None, ...]

    @property
    def plain(self) -> bool:
        """Whether zarr's result is numpy's (no reversed slice, no new axis)."""
        return all(v == slice(None) for v in self.view)

    def apply(self, out: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Turn zarr's result ``out`` into numpy's."""
        return out if self.plain else out[self.view]

    def unapply(self, value: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Turn a value shaped like numpy's result into one shaped like zarr's."""
        if self.plain:
            return value
        back = tuple(0 if v is None else v for v in self.view)
        return value[(*back, Ellipsis)]  # "...": a 0-d array, never a scalar


def _is_int(item: object) -> bool:
    return isinstance(item, numbers.Integral | np.integer) and not isinstance(item, bool | np.bool_)


def _one(item: Any, n: int, axis: int) -> tuple[int | slice, slice | None]:
    """Return the zarr selection of one dimension and its view (``None``: dropped)."""
    if _is_int(item):
        i = int(item)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
        return (i + n if i < 0 else i), None
    start, stop, step = item.indices(n)
    if step > 0:
        return slice(start, max(start, stop), step), slice(None)
    count = len(range(start, stop, step))
    if count == 0:
        return slice(0, 0, 1), slice(None)
    last = start + (count - 1) * step
    return slice(last, start + 1, -step), slice(None, None, -1)


def parse_selection(selection: Any, shape: tuple[int, ...]) -> Selection | None:
    """Return ``selection`` as a :class:`Selection`, or ``None`` if it is not basic indexing.

    Raises
    ------
    IndexError
        If an integer is out of bounds, or there are too many indices.

    >>> s = parse_selection((slice(None, None, -2), None, 3), (5, 4))
    >>> s.zarr, s.view
    ((slice(0, 5, 2), 3), (slice(None, None, -1), None))
    """
    items = selection if isinstance(selection, tuple) else (selection,)
    if not all(i is None or i is Ellipsis or _is_int(i) or isinstance(i, slice) for i in items):
        return None
    if sum(i is Ellipsis for i in items) > 1:
        return None
    n_real = sum(i is not None and i is not Ellipsis for i in items)
    if n_real > len(shape):
        raise IndexError(
            f"too many indices for array: array is {len(shape)}-dimensional, "
            f"but {n_real} were indexed"
        )
    expanded: list[Any] = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - n_real))
        else:
            expanded.append(item)
    if Ellipsis not in items:
        expanded.extend([slice(None)] * (len(shape) - n_real))
    zarr_sel: list[int | slice] = []
    view: list[slice | None] = []
    axis = 0
    for item in expanded:
        if item is None:
            view.append(None)
            continue
        dim_sel, dim_view = _one(item, shape[axis], axis)
        zarr_sel.append(dim_sel)
        if dim_view is not None:
            view.append(dim_view)
        axis += 1
    return Selection(tuple(zarr_sel), tuple(view))
