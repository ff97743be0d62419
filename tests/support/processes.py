"""Processes for the concurrency tests: spawn, run, and the plans of updates they apply."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import numpy as np
import zarr

from tests.support.reliability import (
    chunk_ids,
)

__all__ = ["SPAWN", "create_array", "grid_of", "run_processes", "shared_shard_plans"]


SPAWN = multiprocessing.get_context("spawn")


def create_array(
    store: Any,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    *,
    compressor: Any = None,
) -> Any:
    return zarr.open_array(
        store,
        path="x",
        mode="w",
        shape=shape,
        chunks=chunks,
        dtype="<i8",
        fill_value=-1,
        compressor=compressor,
    )


def grid_of(arr: Any) -> tuple[int, ...]:
    return tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True))


def run_processes(target: Any, args_list: list[tuple[Any, ...]], timeout: float = 120) -> None:
    """Start one spawn process per argument tuple (after a start event), wait for all."""
    start = SPAWN.Event()
    procs = [SPAWN.Process(target=target, args=(start, *args)) for args in args_list]
    for p in procs:
        p.start()
    start.set()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    codes = [p.exitcode for p in procs]
    assert codes == [0] * len(procs), f"worker exit codes {codes}"


def shared_shard_plans(arr: Any, n_procs: int, seed: int, generations: int = 2) -> list[list[Any]]:
    """Process ``p`` owns chunks ``id % n_procs == p`` (in every shard); it writes each of them
    alone (a partial update) at generation 1, then again at generations 2, 3, ..., in random
    order."""
    coords = dict(chunk_ids(grid_of(arr)))
    rng = np.random.default_rng(seed)
    plans = []
    for p in range(n_procs):
        own = [i for i in coords if i % n_procs == p]
        plan = []
        for g in range(1, generations + 1):
            for i in rng.permutation(own).tolist():
                plan.append((g, [coords[i]]))
        plans.append(plan)
    return plans
