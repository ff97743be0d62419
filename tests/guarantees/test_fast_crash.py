"""Crash safety of the fast path: a writer killed with SIGKILL mid-write leaves whole shards.

A writer subprocess opens two arrays of a ``ShardedStore(DirectoryStore)`` with
``shardedstore.open_array(..., mode="r+", threads=2)`` -- ``raw`` (no compressor) and
``blosc`` (Blosc lz4), each of several shards, edge shards included -- and writes whole-array
*versions* forever: ``array[...] = v`` sets every element to ``v``. Each write encodes chunks
on the thread pool and hands each complete shard to ``threads.Background``, whose I/O threads
write it (temp file, fsync, rename). Before a write the writer prints ``S name v`` to its log,
after it ``D name v``; the test kills it with SIGKILL after a seeded random delay, so that
kills land while shards are being encoded, written and synced.

After each kill, a fresh store (read by the fast path and by ``zarr.open_array`` over a fresh
``ShardedStore``, i.e. zarr's path) must show every shard readable and whole: all the
elements of a shard equal one version, the last one written in full to that shard or the one
in flight. A region write is *not* atomic across shards: when a kill lands inside a write,
some shards hold the new version and others the old one, and that is allowed (and counted).
Every shard passes verification, and leftover ``*.partial`` temp files of killed shard writes
(one torn copy is planted before the first writer) never show up as keys, in listings, in
``nchunks_initialized``, nor break a later read or a later fast write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

import shardedstore
from shardedstore import ShardedStore
from shardedstore.format.keys import format_chunk_key
from tests.guarantees.test_crash import wait_for_progress
from tests.support.reliability import check_shards, temp_files

#: name -> (shape, chunks, chunks per shard, compressor); both have edge shards
ARRAYS: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int], Any]] = {
    "raw": ((250, 330), (25, 30), (4, 4), None),
    "blosc": ((256, 300), (32, 32), (2, 4), numcodecs.Blosc("lz4", clevel=5)),
}
FILL = -1
N_KILLS = 25
#: the longest random wait after the writer's first ``S`` line: a few versions' writes
MAX_DELAY = 0.12
#: the torn temp file planted before the first writer (a killed write's leftover)
PLANTED = "raw/0.0." + "5e" * 16 + ".partial"

WRITER = textwrap.dedent(
    """
    import os, sys
    from zarr.storage import DirectoryStore
    import shardedstore

    root, version, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    store = shardedstore.ShardedStore(DirectoryStore(os.path.join(root, "data")))
    arrays = {n: shardedstore.open_array(store, n, mode="r+", threads=2) for n in names}
    while True:
        for name, array in arrays.items():
            print(f"S {name} {version}", flush=True)
            array[...] = version
            print(f"D {name} {version}", flush=True)
        version += 1
    """
)

Shard = tuple[int, ...]


@dataclass
class FastCrashStats:
    kills: int = 0
    in_flight: int = 0  # kills between an ``S`` line and its ``D`` line
    mixed: int = 0  # kills after which one array's shards held different versions
    versions: int = 0  # array writes completed
    temp_files_seen: set[str] = field(default_factory=set)


def shard_grid(name: str) -> tuple[int, ...]:
    shape, chunks, cps, _ = ARRAYS[name]
    return tuple(-(-s // (c * n)) for s, c, n in zip(shape, chunks, cps, strict=True))


def shard_region(name: str, shard: Shard) -> tuple[slice, ...]:
    _, chunks, cps, _ = ARRAYS[name]
    return tuple(
        slice(i * c * n, (i + 1) * c * n) for i, c, n in zip(shard, chunks, cps, strict=True)
    )


def chunk_keys(name: str) -> list[str]:
    shape, chunks, _, _ = ARRAYS[name]
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    return [format_chunk_key(name, tuple(c), ".") for c in np.ndindex(*grid)]


def create_arrays(data: Path) -> dict[str, dict[Shard, int]]:
    """Create the arrays, write version 0 through the fast path; return the model."""
    cps = {name: spec[2] for name, spec in ARRAYS.items()}
    store = ShardedStore(DirectoryStore(str(data)), chunk_shards=cps)
    group = zarr.open_group(store, mode="w")
    for name, (shape, chunks, _, compressor) in ARRAYS.items():
        group.create(
            name, shape=shape, chunks=chunks, dtype="<i4", compressor=compressor, fill_value=FILL
        )
        shardedstore.open_array(store, name, mode="r+", threads=2)[...] = 0
        layout = ShardedStore(DirectoryStore(str(data))).layout(name)
        assert layout is not None
        assert layout.chunks_per_shard == cps[name]
    return {name: dict.fromkeys(np.ndindex(*shard_grid(name)), 0) for name in ARRAYS}


def plant_torn_temp_file(data: Path) -> Path:
    """Leave a torn ``*.partial`` copy of a shard, as a writer killed mid-write would."""
    temp = data / PLANTED
    temp.write_bytes((data / "raw" / "0.0").read_bytes()[:777])
    return temp


def parse_lines(text: str) -> list[tuple[str, str, int]]:
    """Return ``[(S or D, array name, version), ...]``; a line cut by the kill is dropped."""
    lines = text.splitlines(keepends=True)
    return [
        (kind, name, int(v))
        for kind, name, v in (line.split() for line in lines if line.endswith("\n"))
    ]


def allowed_versions(
    model: dict[str, dict[Shard, int]], lines: list[tuple[str, str, int]]
) -> tuple[dict[str, dict[Shard, set[int]]], dict[str, int], int]:
    """Replay one writer's log onto ``model``: return the versions each shard may hold
    (its last whole version, and the version in flight if any), the next version to write
    and the number of writes completed."""
    allowed = {name: {s: {v} for s, v in shards.items()} for name, shards in model.items()}
    started: dict[str, int] = {}
    completed = 0
    for kind, name, version in lines:
        if kind == "S":
            started[name] = version
            for versions in allowed[name].values():
                versions.add(version)
        else:
            if started.pop(name, None) != version:
                raise AssertionError(f"log out of order at D {name} {version}")
            allowed[name] = {s: {version} for s in allowed[name]}
            completed += 1
    return allowed, started, completed


def observe(data: Path) -> dict[str, dict[Shard, int]]:
    """Read every array with a fresh store, by the fast path and by zarr's; return the one
    version each shard holds (raise if a shard is torn, unreadable or holds two values)."""
    out: dict[str, dict[Shard, int]] = {}
    for name in ARRAYS:
        fast = shardedstore.open_array(ShardedStore(DirectoryStore(str(data))), name, threads=2)
        assert fast.sharded
        values = fast[...]
        plain = zarr.open_array(ShardedStore(DirectoryStore(str(data))), path=name, mode="r")
        np.testing.assert_array_equal(plain[...], values, err_msg=f"{name}: zarr's path differs")
        out[name] = {}
        for shard in np.ndindex(*shard_grid(name)):
            found = np.unique(values[shard_region(name, shard)]).tolist()
            assert len(found) == 1, f"{name} shard {shard} is torn: it holds {found}"
            out[name][shard] = found[0]
    return out


def check_listing(data: Path, metadata_keys: list[str]) -> None:
    """Keys, listings and counts show the arrays' chunks and metadata, no temp file."""
    store = ShardedStore(DirectoryStore(str(data)))
    expected = sorted(metadata_keys + [k for name in ARRAYS for k in chunk_keys(name)])
    assert sorted(store.keys()) == expected
    assert sorted(zarr.open_group(store, mode="r").array_keys()) == sorted(ARRAYS)
    for name in ARRAYS:
        names = store.listdir(name)
        assert not [n for n in names if ".partial" in n], names
        array = zarr.open_array(store, path=name, mode="r")
        assert array.nchunks_initialized == array.nchunks
    check_shards(DirectoryStore(str(data)))


def check_after_kill(
    data: Path,
    model: dict[str, dict[Shard, int]],
    lines: list[tuple[str, str, int]],
    metadata_keys: list[str],
    stats: FastCrashStats,
) -> tuple[dict[str, dict[Shard, int]], int]:
    """Check the store after a kill; return the new model and the next version to write."""
    allowed, started, completed = allowed_versions(model, lines)
    observed = observe(data)
    for name, shards in observed.items():
        for shard, version in shards.items():
            assert version in allowed[name][shard], (
                f"{name} shard {shard} holds version {version}, expected one of "
                f"{sorted(allowed[name][shard])} (in flight: {started})"
            )
        stats.mixed += len(set(shards.values())) > 1
    check_listing(data, metadata_keys)
    stats.in_flight += bool(started)
    stats.versions += completed
    stats.temp_files_seen.update(f for f in temp_files(str(data)) if not f.endswith(PLANTED))
    last = max((v for _, _, v in lines), default=-1)
    return observed, last + 1


def run_writer(root: Path, version: int, delay: float) -> str:
    """Start a writer at ``version``; kill it ``delay`` seconds after its first line; return
    what it logged."""
    log = root / "log"
    size = log.stat().st_size if log.exists() else 0
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [sys.executable, "-c", WRITER, str(root), str(version), ",".join(ARRAYS)]
    with open(log, "ab") as out, open(root / "writer.err", "ab") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    try:
        wait_for_progress(proc, log, size, root)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, (root / "writer.err").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    with open(log, "rb") as f:
        f.seek(size)
        return f.read().decode()


def check_later_fast_write(data: Path, version: int, metadata_keys: list[str]) -> None:
    """After every kill: a fast write of all the arrays, then everything reads ``version``."""
    store = ShardedStore(DirectoryStore(str(data)))
    for name in ARRAYS:
        shardedstore.open_array(store, name, mode="r+", threads=2)[...] = version
    for name, shards in observe(data).items():
        assert set(shards.values()) == {version}, name
    check_listing(data, metadata_keys)


@pytest.mark.timeout(240)
def test_sigkill_during_fast_writes_leaves_every_shard_one_whole_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    model = create_arrays(data)
    metadata_keys = sorted(
        k for k in ShardedStore(DirectoryStore(str(data))) if k.rpartition("/")[2].startswith(".")
    )
    assert metadata_keys == [".zgroup", "blosc/.zarray", "raw/.zarray"]
    planted = plant_torn_temp_file(data)
    check_listing(data, metadata_keys)
    rng = np.random.default_rng(20261202)
    stats = FastCrashStats()
    version = 1
    for _ in range(N_KILLS):
        lines = parse_lines(run_writer(tmp_path, version, float(rng.uniform(0, MAX_DELAY))))
        model, version = check_after_kill(data, model, lines, metadata_keys, stats)
        stats.kills += 1
    check_later_fast_write(data, version, metadata_keys)
    print(
        f"\nfast path: {stats.kills} kills survived, {stats.in_flight} inside an array write, "
        f"{stats.mixed} leaving shards of one array at different versions, {stats.versions} "
        f"array writes completed, {len(stats.temp_files_seen)} temp files left by killed shard "
        "writes (never listed nor read), besides the planted one"
    )
    assert stats.kills == N_KILLS
    assert planted.exists()  # it was there through every read, listing and write
    # the writer spends nearly all its time inside writes: most kills land in one, and
    # some between the renames of two shards of one write
    assert stats.in_flight >= N_KILLS // 2
    assert stats.mixed >= 1
