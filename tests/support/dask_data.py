"""The dataset, encodings and schedulers shared by the dask tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

__all__ = [
    "CHUNKS_PER_SHARD",
    "DIMS",
    "ONE_CHUNK",
    "PARTIAL",
    "SHAPE",
    "ZARR_CHUNKS",
    "encoding_for",
    "make_dataset",
    "processes_scheduler",
]


DIMS = ("t", "y", "x")


SHAPE = (8, 40, 60)


ZARR_CHUNKS = {"t": 1, "y": 10, "x": 10}


CHUNKS_PER_SHARD = {"t": 4, "y": 2, "x": 3}  # shards of (4, 20, 30): 2 x 2 x 2 per variable


#: dask chunks covering a third of a shard each, split along the last dimension: the three
#: tasks of a shard come one after the other, so both workers update the same shard at once
#: (with a lock that excludes nothing, this loses updates in most runs)
PARTIAL = {"t": 4, "y": 20, "x": 10}


def make_dataset() -> Any:
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(42)
    return xr.Dataset(
        {
            "v": (DIMS, rng.random(SHAPE)),
            "w": (DIMS, rng.integers(-1000, 1000, SHAPE).astype("i4")),
        },
        coords={"t": np.arange(SHAPE[0])},
    )


def encoding_for(ds: Any) -> dict[str, dict[str, Any]]:
    return {name: {"chunks": tuple(ZARR_CHUNKS[d] for d in DIMS)} for name in ds.data_vars}


#: one zarr chunk per dask chunk: the 24 tasks of each shard all read-modify-write it
ONE_CHUNK = ZARR_CHUNKS


def processes_scheduler() -> Any:
    """``dask.config.set(scheduler="processes")`` with 4 worker processes."""
    dask = pytest.importorskip("dask")
    return dask.config.set(scheduler="processes", num_workers=4)
