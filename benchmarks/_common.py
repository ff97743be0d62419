"""Workload and measurement helpers shared by the parent and every worker.

Only numpy and the standard library are used here: the zarr-python 3 and tensorstore workers
import this module from their own virtual environments.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

DTYPE: Final = np.dtype("<u2")
SEED: Final = 20240601
PHASES: Final = ("write", "read", "random")
PREWARM_FACTOR: Final = {"write": 2.5, "read": 2.0}  # x the array's logical bytes
PREWARM_RANDOM_BYTES: Final = 64 << 20
MARK_PREFIX: Final = "/__phase__/"
METADATA_NAMES: Final = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})

Spec = dict[str, Any]


def make_data(shape: tuple[int, ...]) -> npt.NDArray[np.uint16]:
    """Return the deterministic, compressible test array: a smooth field plus small noise.

    Built slab by slab along axis 0 so that the 1 GiB variant needs no float64 temporary of
    the whole array.
    """
    out = np.empty(shape, dtype=DTYPE)
    rng = np.random.default_rng(SEED)
    y = np.arange(shape[1], dtype=np.float32)[:, None]
    z = np.arange(shape[2], dtype=np.float32)[None, :]
    for x0 in range(shape[0]):
        x = np.float32(x0)
        field = 3000 * np.sin(x / 97 + y / 131) * np.cos(z / 89) + 1000 * np.sin((y + z) / 61)
        noise = rng.integers(0, 4, size=(shape[1], shape[2]), dtype=np.uint16)
        out[x0] = (field + 20000).astype(DTYPE) + noise
    return out


def checksum(array: npt.NDArray[Any]) -> int:
    """Return the CRC32 of an array's C-order bytes."""
    return zlib.crc32(np.ascontiguousarray(array).data)


def load_data(path: str) -> npt.NDArray[np.uint16]:
    """Load the cached workload array fully into memory (every page touched)."""
    data: npt.NDArray[np.uint16] = np.load(path)
    return data


def random_chunk_origins(spec: Spec) -> list[tuple[int, int, int]]:
    """Return the deterministic chunk-aligned origins of the random single-chunk reads."""
    grid = [s // c for s, c in zip(spec["shape"], spec["read_chunks"], strict=True)]
    rng = np.random.default_rng(SEED + 1)
    coords = rng.integers(0, grid, size=(spec["n_random"], 3))
    return [
        (
            int(i) * spec["read_chunks"][0],
            int(j) * spec["read_chunks"][1],
            int(k) * spec["read_chunks"][2],
        )
        for i, j, k in coords
    ]


def rss_mib() -> float:
    """Return the current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Return the peak resident set size of this process in MiB (Linux ``VmHWM``).

    Why not ``ru_maxrss``: Linux carries it across ``execve``, so a worker started by a parent
    that once held a lot of memory would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_usage(path: str) -> dict[str, int]:
    """Count files and bytes (apparent and allocated) under ``path``."""
    files = apparent = allocated = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(root, name))
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"files": files, "bytes": apparent, "bytes_allocated": allocated}


class Adapter(Protocol):
    """What each implementation provides to the phase runner."""

    def create(self) -> None: ...
    def write(self, data: npt.NDArray[np.uint16]) -> None: ...
    def open(self) -> None: ...
    def read(self) -> npt.NDArray[Any]: ...
    def read_chunk(self, origin: tuple[int, int, int]) -> npt.NDArray[Any]: ...


def prewarm(nbytes: int) -> dict[str, float]:
    """Touch and free ``nbytes`` of memory, then reset the peak-RSS mark; return the cost.

    Why: this VM hands free memory back to the hypervisor (free page reporting) within seconds,
    and memory faulted back in runs at a few hundred MB/s, ten times slower than memory the
    guest still holds. Freed pages are reused first, so touching the memory a phase is about to
    need and freeing it right before the timed region keeps the hypervisor out of the
    measurement. Clearing ``VmHWM`` afterwards keeps the buffer out of the peak-RSS figure.
    """
    start = time.perf_counter()
    buf = np.empty(max(nbytes, 1), dtype=np.uint8)
    buf[::4096] = 1
    del buf
    seconds = time.perf_counter() - start
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return {"prewarm_mib": nbytes / 2**20, "prewarm_s": seconds}


def _logical_bytes(spec: Spec) -> int:
    return int(np.prod(spec["shape"])) * DTYPE.itemsize


def _timed(func: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def run_write(spec: Spec, adapter: Adapter) -> dict[str, Any]:
    """Time one full write; array creation and the final ``sync`` are untimed."""
    data = load_data(spec["data_file"])
    adapter.create()
    warm = prewarm(int(PREWARM_FACTOR["write"] * _logical_bytes(spec)))
    before = rss_mib()
    cpu = time.process_time()
    seconds, _ = _timed(lambda: adapter.write(data))
    cpu = time.process_time() - cpu
    peak = peak_rss_mib()
    os.sync()  # so that writeback does not spill into the next phase
    result: dict[str, Any] = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": before,
        **warm,
    }
    result["peak_rss_mib"] = peak
    if spec.get("path") and not spec.get("s3"):
        result.update(disk_usage(spec["path"]))
    return result


def run_read(spec: Spec, adapter: Adapter) -> dict[str, Any]:
    """Time one full read (opening untimed) and verify it against the expected checksum."""
    adapter.open()
    warm = prewarm(int(PREWARM_FACTOR["read"] * _logical_bytes(spec)))
    before = rss_mib()
    cpu = time.process_time()
    seconds, out = _timed(adapter.read)
    cpu = time.process_time() - cpu
    peak = peak_rss_mib()
    ok = tuple(out.shape) == tuple(spec["shape"]) and checksum(out) == spec["checksum"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "verified": ok,
        **warm,
    }


def run_random(spec: Spec, adapter: Adapter) -> dict[str, Any]:
    """Time single-chunk reads one by one, within the spec's time budget."""
    origins = random_chunk_origins(spec)
    adapter.open()
    warm = prewarm(min(PREWARM_RANDOM_BYTES, _logical_bytes(spec)))
    before = rss_mib()
    budget = float(spec.get("random_budget_s", 1e9))
    times: list[float] = []
    start, cpu = time.perf_counter(), time.process_time()
    for origin in origins:
        t0 = time.perf_counter_ns()
        adapter.read_chunk(origin)
        times.append((time.perf_counter_ns() - t0) / 1e3)
        if time.perf_counter() - start > budget:
            break
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = peak_rss_mib()
    ok = _verify_chunks(spec, adapter, origins[:16])
    return {
        "seconds": total,
        "cpu_seconds": cpu,
        "n": len(times),
        "median_us": float(np.median(times)),
        "mean_us": float(np.mean(times)),
        "p90_us": float(np.percentile(times, 90)),
        "first_us": times[0],
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "verified": ok,
        **warm,
    }


def _verify_chunks(spec: Spec, adapter: Adapter, origins: list[tuple[int, int, int]]) -> bool:
    if spec.get("skip_chunk_verify"):
        return True
    mark(spec, "verify")  # the verification reads are not the phase's requests
    data = np.load(spec["data_file"], mmap_mode="r")
    c = spec["read_chunks"]
    for i, j, k in origins:
        want = data[i : i + c[0], j : j + c[1], k : k + c[2]]
        if not np.array_equal(adapter.read_chunk((i, j, k)), want):
            return False
    return True


RUNNERS: Final[dict[str, Callable[[Spec, Adapter], dict[str, Any]]]] = {
    "write": run_write,
    "read": run_read,
    "random": run_random,
}


def mark(spec: Spec, label: str) -> None:
    """Tell the counting S3 server that the requests from now on belong to ``label``."""
    s3 = spec.get("s3")
    if s3:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{s3['endpoint']}{MARK_PREFIX}{label}") as response:
            response.read()


def worker_main(make_adapter: Callable[[Spec], Adapter], versions: dict[str, str]) -> None:
    """Run the phases named in the JSON spec (argv[1]) and print one JSON line of results."""
    spec: Spec = json.loads(sys.argv[1])
    results: dict[str, Any] = {"versions": versions}
    for phase in spec["phases"]:
        mark(spec, phase)
        results[phase] = RUNNERS[phase](spec, make_adapter(spec))
    mark(spec, "end")
    results["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(results), flush=True)


def chunk_slices(origin: tuple[int, int, int], chunks: list[int]) -> tuple[slice, ...]:
    """Return the index tuple selecting the chunk that starts at ``origin``."""
    return tuple(slice(o, o + c) for o, c in zip(origin, chunks, strict=True))
