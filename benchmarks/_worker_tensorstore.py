"""Benchmark worker for tensorstore's ``zarr3`` driver with ``sharding_indexed``.

Runs in the ``tensorstore`` venv. Usage: ``<venv python> _worker_tensorstore.py '<json spec>'``;
prints one ``RESULT {json}`` line. Tensorstore's defaults are kept (no cache pool).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorstore as ts

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import Spec


def kvstore(spec: Spec) -> dict[str, Any]:
    """Return the kvstore spec: a local directory, or the S3 server."""
    s3 = spec.get("s3")
    if not s3:
        return {"driver": "file", "path": spec["path"] + "/"}
    return {
        "driver": "s3",
        "bucket": s3["bucket"],
        "path": spec["path"] + "/",
        "endpoint": s3["endpoint"],
        "aws_region": s3["region"],
        "aws_credentials": {"type": "environment"},
    }


def metadata(spec: Spec) -> dict[str, Any]:
    """Return the zarr3 metadata of a sharded array matching the workload."""
    inner: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if spec["compression"] == "blosc":
        blosc = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 2, "blocksize": 0}
        inner.append({"name": "blosc", "configuration": blosc})
    shard = [c * n for c, n in zip(spec["chunks"], spec["chunks_per_shard"], strict=True)]
    sharding = {
        "chunk_shape": spec["chunks"],
        "codecs": inner,
        "index_codecs": [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "crc32c"},
        ],
        "index_location": "end",
    }
    return {
        "shape": spec["shape"],
        "data_type": "uint16",
        "fill_value": 0,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shard}},
        "chunk_key_encoding": {"name": "default"},
        "codecs": [{"name": "sharding_indexed", "configuration": sharding}],
    }


class TensorstoreAdapter:
    """Drive a tensorstore zarr3 array through its normal indexing API."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.array: Any = None

    def create(self) -> None:
        self.array = ts.open(
            {"driver": "zarr3", "kvstore": kvstore(self.spec), "metadata": metadata(self.spec)},
            create=True,
            delete_existing=True,
        ).result()

    def write(self, data: npt.NDArray[np.uint16]) -> None:
        self.array.write(data).result()

    def open(self) -> None:
        self.array = ts.open(
            {"driver": "zarr3", "kvstore": kvstore(self.spec)}, open=True, read=True
        ).result()

    def read(self) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = self.array.read().result()
        return out

    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]:
        index = _common.chunk_slices(origin, self.spec["read_chunks"])
        out: npt.NDArray[Any] = self.array[index].read().result()
        return out


if __name__ == "__main__":
    _common.worker_main(
        TensorstoreAdapter, {name: version(name) for name in ("tensorstore", "numpy")}
    )
