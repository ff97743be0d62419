"""Benchmark worker for zarr-python 3 with its sharding codec (runs in the ``zarr3`` venv).

Usage: ``<zarr3 venv python> _worker_zarr3.py '<json spec>'``; prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import BloscCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import Spec


def make_store(spec: Spec) -> Any:
    """Return a LocalStore, or an FsspecStore on the S3 server."""
    s3 = spec.get("s3")
    if not s3:
        return zarr.storage.LocalStore(spec["path"])
    return zarr.storage.FsspecStore.from_url(
        f"s3://{s3['bucket']}/{spec['path']}",
        storage_options={
            "key": s3["key"],
            "secret": s3["secret"],
            "client_kwargs": {"endpoint_url": s3["endpoint"], "region_name": s3["region"]},
        },
        read_only=False,
    )


class Zarr3Adapter:
    """Drive a zarr-python 3 sharded array through its normal indexing API."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.array: Any = None

    def create(self) -> None:
        spec = self.spec
        compressors: Any = None
        if spec["compression"] == "blosc":
            compressors = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
        shards = tuple(c * n for c, n in zip(spec["chunks"], spec["chunks_per_shard"], strict=True))
        self.array = zarr.create_array(
            store=make_store(spec),
            shape=tuple(spec["shape"]),
            chunks=tuple(spec["chunks"]),
            shards=shards,
            dtype="uint16",
            compressors=compressors,
            fill_value=0,
            overwrite=True,
        )

    def write(self, data: npt.NDArray[np.uint16]) -> None:
        self.array[...] = data

    def open(self) -> None:
        self.array = zarr.open_array(store=make_store(self.spec), mode="r")

    def read(self) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.array[...]
        return out

    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.array[_common.chunk_slices(origin, self.spec["read_chunks"])]
        return out


if __name__ == "__main__":
    _common.worker_main(
        Zarr3Adapter, {name: version(name) for name in ("zarr", "numcodecs", "numpy")}
    )
