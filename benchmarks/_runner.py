"""Launch benchmark workers, each phase in a fresh subprocess, and collect their JSON results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import _common
import numpy as np

HERE: Final = Path(__file__).resolve().parent
WORKER_SCRIPTS: Final = {
    "v2": HERE / "_worker_v2.py",
    "zarr3": HERE / "_worker_zarr3.py",
    "tensorstore": HERE / "_worker_tensorstore.py",
}
WORKER_TIMEOUT_S: Final = 900


@dataclass(frozen=True)
class Impl:
    """One implementation under test."""

    key: str
    label: str
    worker: str  # a key of WORKER_SCRIPTS
    impl: str  # the worker's implementation name
    chunk_factor: int = 1  # zarr chunk = inner chunk * factor (the "big chunks" baseline)
    phases: tuple[str, ...] = _common.PHASES


IMPLS: Final = (
    Impl("zarr2-32", "(1) zarr2 DirectoryStore, 32^3 chunks", "v2", "zarr2"),
    Impl("zarr2-256", "(2) zarr2 DirectoryStore, 256^3 chunks", "v2", "zarr2", chunk_factor=8),
    Impl("sharded", "(3) ShardedStore, 32^3 chunks in 8^3 shards", "v2", "sharded"),
    Impl(
        "sharded-buffered",
        "(3b) ShardedStore + buffered()",
        "v2",
        "sharded-buffered",
        phases=("write",),
    ),
    Impl(
        "sharded-thread-locks",
        "(3c) ShardedStore, lock=ThreadLocks() (no flock)",
        "v2",
        "sharded-thread-locks",
        phases=("write",),
    ),
    Impl(
        "sharded-scratch",
        "(3d) ShardedStore, lock=ThreadLocks(), durable=False",
        "v2",
        "sharded-scratch",
        phases=("write",),
    ),
    Impl("zarr3", "(4) zarr-python 3.1 sharding codec", "zarr3", "zarr3"),
    Impl("tensorstore", "(5) tensorstore zarr3 sharding_indexed", "tensorstore", "tensorstore"),
    Impl("raw", "(6) raw numpy, one file (uncompressed)", "v2", "raw"),
)
IMPL_BY_KEY: Final = {impl.key: impl for impl in IMPLS}


@dataclass
class Context:
    """What every worker launch needs: interpreters, scratch directory, S3 settings."""

    workdir: Path
    pythons: dict[str, Path]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log: Callable[[str], None] = print

    def python_for(self, worker: str) -> Path | None:
        if worker == "v2":
            return Path(sys.executable)
        return self.pythons.get(worker)


@dataclass(frozen=True)
class DataSet:
    """A cached workload array on disk and the facts the workers verify against."""

    shape: tuple[int, int, int]
    path: Path
    checksum: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * _common.DTYPE.itemsize


def prepare_data(datadir: Path, shape: tuple[int, int, int]) -> DataSet:
    """Generate (once, cached) the workload array as ``.npy`` with its checksum."""
    datadir.mkdir(parents=True, exist_ok=True)
    stem = "data-" + "x".join(map(str, shape))
    npy, meta = datadir / f"{stem}.npy", datadir / f"{stem}.json"
    if npy.exists() and meta.exists():
        return DataSet(shape, npy, int(json.loads(meta.read_text())["checksum"]))
    data = _common.make_data(shape)
    tmp = datadir / f"{stem}.{os.getpid()}.tmp.npy"
    np.save(tmp, data)
    os.replace(tmp, npy)
    meta.write_text(json.dumps({"checksum": _common.checksum(data)}))
    return DataSet(shape, npy, _common.checksum(data))


def run_worker(ctx: Context, worker: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker process on ``spec`` and return its parsed result (or an error)."""
    python = ctx.python_for(worker)
    if python is None:
        return {"error": f"no interpreter for {worker}"}
    cmd = [str(python), str(WORKER_SCRIPTS[worker]), json.dumps(spec)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=ctx.env, timeout=WORKER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    wall = time.perf_counter() - start
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["wall_s"] = wall
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
    return {"error": "\n".join(tail) or f"exit code {proc.returncode}"}


def make_spec(
    impl: Impl,
    data: DataSet,
    path: str,
    compression: str,
    phases: list[str],
    *,
    chunks: int = 32,
    chunks_per_shard: int = 8,
    n_random: int = 2000,
    random_budget_s: float = 5.0,
    **extra: Any,
) -> dict[str, Any]:
    """Return the JSON spec a worker runs."""
    return {
        "impl": impl.impl,
        "phases": phases,
        "path": path,
        "shape": list(data.shape),
        "chunks": [chunks * impl.chunk_factor] * 3,
        "read_chunks": [chunks] * 3,
        "chunks_per_shard": [chunks_per_shard] * 3,
        "compression": compression,
        "data_file": str(data.path),
        "checksum": data.checksum,
        "n_random": n_random,
        "random_budget_s": random_budget_s,
        **extra,
    }


def phase_groups(impl: Impl, combine: bool) -> list[list[str]]:
    """Split an implementation's phases into processes: one each, or all in one (--quick)."""
    if combine:
        return [list(impl.phases)]
    return [[phase] for phase in impl.phases]


def record(
    store: dict[str, list[dict[str, Any]]], result: dict[str, Any], phases: list[str]
) -> None:
    """Append a worker result to ``store[phase]`` for every phase it ran (errors included)."""
    for phase in phases:
        entry = dict(result.get(phase, {}))
        if "error" in result:
            entry["error"] = result["error"]
        entry.setdefault("peak_rss_mib", result.get("peak_rss_mib"))
        entry["versions"] = result.get("versions", {})
        store.setdefault(phase, []).append(entry)


def run_main_comparison(
    ctx: Context,
    impls: list[Impl],
    data: DataSet,
    compressions: list[str],
    reps: int,
    combine: bool,
    n_random: int,
    random_budget_s: float,
) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    """Run every implementation, alternating them within each repetition.

    Within a repetition every implementation writes, then every one reads, then every one does
    random reads; the implementation order rotates from one repetition to the next. Stores go to
    fresh directories and are deleted only at the end of the whole run.
    """
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for compression in compressions:
        todo = [i for i in impls if compression == "none" or i.key != "raw"]
        per_impl = results.setdefault(compression, {i.key: {} for i in todo})
        for rep in range(reps):
            order = todo[rep % len(todo) :] + todo[: rep % len(todo)]
            groups = {i.key: phase_groups(i, combine) for i in order}
            for step in range(max(len(g) for g in groups.values())):
                launches = []
                for impl in order:
                    if step >= len(groups[impl.key]):
                        continue
                    phases = groups[impl.key][step]
                    path = str(ctx.workdir / f"main-{compression}-{impl.key}-r{rep}")
                    spec = make_spec(
                        impl,
                        data,
                        path,
                        compression,
                        phases,
                        n_random=n_random,
                        random_budget_s=random_budget_s,
                    )
                    launches.append((impl, phases, spec))
                # --quick only checks that everything runs: two workers at a time is fine there
                with ThreadPoolExecutor(max_workers=2 if combine else 1) as pool:
                    outcomes = pool.map(lambda a: run_worker(ctx, a[0].worker, a[2]), launches)
                    for (impl, phases, _spec), result in zip(launches, outcomes, strict=True):
                        record(per_impl[impl.key], result, phases)
                        ctx.log(
                            f"  {compression:5} rep {rep} {impl.key:16} {'+'.join(phases):18} "
                            f"{short(result, phases)}"
                        )
    return results


def short(result: dict[str, Any], phases: list[str]) -> str:
    """Return a one-line summary of a worker result for the progress log."""
    if "error" in result:
        return "ERROR " + str(result["error"]).splitlines()[-1][:120]
    parts = []
    for phase in phases:
        r = result[phase]
        if phase == "random":
            parts.append(f"random {r['median_us']:.0f} us x{r['n']}")
        else:
            parts.append(f"{phase} {r['seconds']:.3f} s")
        if r.get("verified") is False:
            parts.append("WRONG DATA")
    return ", ".join(parts)
