"""Crash safety: a writer process killed with SIGKILL at random moments loses nothing.

A writer subprocess rewrites the shards of one array on a ``DirectoryStore`` forever: whole
shards, partial updates (read-modify-write), updates spanning several shards, deletions
(down to removing a shard). Every store call is one *generation* ``g``: each chunk it writes
carries the stamp ``g * STAMP_BASE + chunk id`` (Zstd-compressed, with a stamp-dependent
length, so shard layouts change from one write to the next). Before a call the writer
appends ``S g kind ids`` to a log, after it ``D g``; the log survives the kill (page cache).

After each kill the checker replays the completed generations onto its model and then
requires, for the one generation in flight (if any), that every shard it touched holds
either all its old chunks or all its new ones; every other chunk must equal the model.
Every shard must pass verification, no leftover ``*.partial`` temp file may show up as a
key, in ``listdir`` or in ``nchunks_initialized``, and the next writer resumes where the
last one died.

Default tier: 20 kills. Slow tier (``pytest -m slow tests/guarantees/test_crash.py``): 200 kills.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore

from shardedstore import ShardedStore
from shardedstore.format.keys import format_chunk_key, parse_chunk_coords
from shardedstore.format.layout import ArrayLayout
from shardedstore.io.base import split_whole
from shardedstore.sharding.listing import is_temp_name
from tests.support.reliability import (
    STAMP_BASE,
    check_shards,
    chunk_ids,
    chunk_stamps,
    stamped_chunk,
    temp_files,
)

SHAPE = (448, 320)
CHUNKS = (64, 64)  # 32 KiB of int64 per chunk; grid (7, 5)
CHUNKS_PER_SHARD = (2, 2)  # shard grid (4, 3): edge shards of 2 and 1 chunks
GRID = tuple(-(-s // c) for s, c in zip(SHAPE, CHUNKS, strict=True))
SHARD_OF = {
    i: tuple(c // n for c, n in zip(coords, CHUNKS_PER_SHARD, strict=True))
    for i, coords in chunk_ids(GRID)
}

WRITER = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import zarr
    from zarr.storage import DirectoryStore
    from shardedstore import ShardedStore
    from tests.support.reliability import STAMP_BASE, chunk_ids, stamped_chunk

    root, seed, generation = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = ShardedStore(DirectoryStore(os.path.join(root, "data")))
    arr = zarr.open_array(store, path="x", mode="r+")
    cps = store.layout("x").chunks_per_shard
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks))
    coords = dict(chunk_ids(grid))
    shards = {}
    for i, c in coords.items():
        shards.setdefault(tuple(a // n for a, n in zip(c, cps)), []).append(i)
    shard_list = sorted(shards)
    log = os.open(os.path.join(root, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def pick_shards(rng, k):
        return [shard_list[j] for j in rng.choice(len(shard_list), size=k, replace=False)]

    while True:
        rng = np.random.default_rng([seed, generation])
        kind = ["whole", "partial", "multi", "delete"][int(rng.integers(4))]
        if kind == "whole":
            ids = [i for s in pick_shards(rng, int(rng.integers(1, 3))) for i in shards[s]]
        elif kind == "multi":
            ids = rng.choice(len(coords), size=int(rng.integers(1, 12)), replace=False).tolist()
        else:
            members = shards[pick_shards(rng, 1)[0]]
            k = int(rng.integers(1, len(members) + 1))
            ids = rng.choice(members, size=k, replace=False).tolist()
        ids = sorted(int(i) for i in ids)
        keys = [arr._chunk_key(coords[i]) for i in ids]
        line = f"S {generation} {kind} {','.join(map(str, ids))}\\n"
        os.write(log, line.encode())
        if kind == "delete":
            store.delitems(keys)
        else:
            values = {}
            for i, key in zip(ids, keys):
                chunk = stamped_chunk(generation * STAMP_BASE + i, arr.chunks, vary=True)
                values[key] = arr._encode_chunk(chunk)
            store.setitems(values)
        os.write(log, f"D {generation}\\n".encode())
        generation += 1
    """
)


@dataclass
class CrashStats:
    kills: int = 0
    in_flight: int = 0  # kills that hit a store call between its S and D lines
    generations: int = 0
    temp_files_seen: set[str] = field(default_factory=set)
    kinds_in_flight: dict[str, int] = field(default_factory=dict)


def create_array(root: Path) -> Any:
    store = ShardedStore(DirectoryStore(str(root / "data")), chunk_shards={"x": CHUNKS_PER_SHARD})
    arr = zarr.open_array(
        store,
        path="x",
        mode="w",
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="<i8",
        fill_value=-1,
        compressor=numcodecs.Zstd(level=1),
    )
    store.setitems(  # generation 0: every chunk
        {
            arr._chunk_key(c): arr._encode_chunk(stamped_chunk(i, CHUNKS, vary=True))
            for i, c in chunk_ids(GRID)
        }
    )
    return arr


def parse_log(path: Path) -> list[tuple[int, str, list[int], bool]]:
    """Return ``[(generation, kind, chunk ids, done), ...]`` from the writer's log."""
    ops: list[tuple[int, str, list[int], bool]] = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a line cut by the kill: its call has not started
        parts = line.split()
        if parts[0] == "S":
            ids = [int(i) for i in parts[3].split(",")] if len(parts) > 3 else []
            ops.append((int(parts[1]), parts[2], ids, False))
        else:
            g, kind, ids, _ = ops[-1]
            if g != int(parts[1]):
                raise AssertionError(f"log out of order at {line!r}")
            ops[-1] = (g, kind, ids, True)
    return ops


def apply(model: dict[int, int], generation: int, kind: str, ids: list[int]) -> dict[int, int]:
    out = dict(model)
    for i in ids:
        if kind == "delete":
            out.pop(i, None)
        else:
            out[i] = generation * STAMP_BASE + i
    return out


def check_after_kill(
    root: Path,
    model: dict[int, int],
    ops: list[tuple[int, str, list[int], bool]],
    stats: CrashStats,
) -> dict[int, int]:
    """Check the store after a kill against ``model`` and the log; return the new model."""
    in_flight = None
    for generation, kind, ids, done in ops:
        if done:
            model = apply(model, generation, kind, ids)
        else:
            in_flight = (generation, kind, ids)
    base = DirectoryStore(str(root / "data"))
    store = ShardedStore(base)
    arr = zarr.open_array(store, path="x", mode="r")
    observed = chunk_stamps(arr, vary=True)  # raises on a torn chunk, or ShardCorruptionError
    if in_flight is None:
        assert observed == model
    else:
        generation, kind, ids = in_flight
        new = apply(model, generation, kind, ids)
        touched = {SHARD_OF[i] for i in ids}
        for shard in touched:
            members = [i for i in ids if SHARD_OF[i] == shard]
            got = [observed.get(i) for i in members]
            old_state = [model.get(i) for i in members]
            new_state = [new.get(i) for i in members]
            assert got in (old_state, new_state), (
                f"shard {shard} after a kill in generation {generation} ({kind}): chunks "
                f"{members} are {got}, neither old {old_state} nor new {new_state}"
            )
        untouched = {i: s for i, s in observed.items() if SHARD_OF[i] not in touched}
        assert untouched == {i: s for i, s in model.items() if SHARD_OF[i] not in touched}
        stats.in_flight += 1
        stats.kinds_in_flight[kind] = stats.kinds_in_flight.get(kind, 0) + 1
    check_shards(base)
    leftovers = temp_files(str(root / "data"))
    stats.temp_files_seen.update(leftovers)
    keys = store.keys()
    assert not [k for k in keys if ".partial" in k]
    assert not [n for n in store.listdir("x") if ".partial" in n]
    assert sorted(k for k in keys if not k.startswith(("x/.", "."))) == sorted(
        arr._chunk_key(c) for i, c in chunk_ids(GRID) if i in observed
    )
    assert arr.nchunks_initialized == len(observed)
    return observed


@contextlib.contextmanager
def writer(root: Path, seed: int, generation: int) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    with open(root / "writer.err", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(seed), str(generation)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def wait_for_progress(proc: subprocess.Popen[bytes], log: Path, size: int, root: Path) -> None:
    deadline = time.monotonic() + 60
    while not log.exists() or log.stat().st_size <= size:
        if proc.poll() is not None:
            raise AssertionError(f"writer died: {(root / 'writer.err').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("writer made no progress in 60 s")
        time.sleep(0.005)


def run_kills(root: Path, n_kills: int, seed: int) -> CrashStats:
    rng = np.random.default_rng(seed)
    create_array(root)
    log = root / "log"
    model = {i: i for i in range(len(SHARD_OF))}
    stats = CrashStats()
    generation = 1
    for _ in range(n_kills):
        size = log.stat().st_size if log.exists() else 0
        with writer(root, seed, generation) as proc:
            wait_for_progress(proc, log, size, root)
            time.sleep(float(rng.uniform(0, 0.15)))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL, (root / "writer.err").read_text()
        ops = parse_log(log)
        new_ops = [op for op in ops if op[0] >= generation]
        model = check_after_kill(root, model, new_ops, stats)
        stats.kills += 1
        stats.generations += len(new_ops)
        generation = ops[-1][0] + 1
    return stats


def report(name: str, stats: CrashStats) -> None:
    print(
        f"\n{name}: {stats.kills} kills survived, {stats.in_flight} in the middle of a store "
        f"call {stats.kinds_in_flight}, {stats.generations} generations written, "
        f"{len(stats.temp_files_seen)} leftover temp files seen (never listed nor read)"
    )


@pytest.mark.timeout(240)
def test_sigkill_leaves_every_shard_old_or_new(tmp_path: Path) -> None:
    stats = run_kills(tmp_path, n_kills=20, seed=20240601)
    report("default tier", stats)
    assert stats.kills == 20


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_leaves_every_shard_old_or_new_200_kills(tmp_path: Path) -> None:
    stats = run_kills(tmp_path, n_kills=200, seed=7)
    report("slow tier", stats)
    assert stats.kills == 200
    # the writer spends nearly all its time inside store calls
    assert stats.in_flight >= 50


def test_leftover_temp_file_is_neither_listed_nor_read(tmp_path: Path) -> None:
    """A ``*.partial`` file left by a killed writer is invisible through the store."""
    arr = create_array(tmp_path)
    shard_path = tmp_path / "data" / "x" / "0.0"
    temp = tmp_path / "data" / "x" / ("0.0." + "ab" * 16 + ".partial")
    temp.write_bytes(shard_path.read_bytes()[:100])  # a torn copy
    store = ShardedStore(DirectoryStore(str(tmp_path / "data")))
    assert not [k for k in store if ".partial" in k]
    assert not [n for n in store.listdir("x") if ".partial" in n]
    assert zarr.open_array(store, path="x", mode="r").nchunks_initialized == len(SHARD_OF)
    expected = chunk_stamps(arr, vary=True)
    assert chunk_stamps(zarr.open_array(store, path="x", mode="r"), vary=True) == expected
    store["x/0.0"] = arr._encode_chunk(stamped_chunk(5 * STAMP_BASE, CHUNKS, vary=True))
    check_shards(store.base)


# -- convert, interrupted and resumed --------------------------------------------------------

CONVERTER = textwrap.dedent(
    """
    import sys
    from zarr.storage import DirectoryStore
    from shardedstore.tools.convert import convert

    src, dst = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    convert(DirectoryStore(src), DirectoryStore(dst), {"a": (4, 4), "g/b": 16})
    print("done", flush=True)
    """
)
CONVERT_CPS = {"a": (4, 4), "g/b": (16,)}


def create_convert_source(root: Path) -> DirectoryStore:
    """A plain (unsharded) source: two arrays, ~4000 chunk files, consolidated metadata."""
    src = DirectoryStore(str(root))
    group = zarr.group(src)
    group.attrs["title"] = "crash test"
    a = group.create_dataset(
        "a", shape=(640, 608), chunks=(16, 16), dtype="<i4", compressor=numcodecs.Zstd(1)
    )
    a[:] = np.random.default_rng(1).integers(0, 1000, size=a.shape)
    b = group.create_dataset(
        "g/b", shape=(119_990,), chunks=(50,), dtype="<f8", compressor=None, fill_value=-1.0
    )
    b[:] = np.arange(b.shape[0], dtype="<f8")
    del src["g/b/7"]  # a missing chunk stays missing
    zarr.consolidate_metadata(src)
    return src


def check_converted_shards(src: DirectoryStore, dst_root: Path) -> int:
    """Check every shard in the destination is complete and byte-identical to the source.

    Returns the number of shards found.
    """
    from shardedstore.tools.verify import verify

    dst = DirectoryStore(str(dst_root))
    report = verify(dst)  # an unfinished copy is an error itself; its shards must be whole
    assert [p for p in report.errors if p.key != ".shardedstore-convert.json"] == []
    view = ShardedStore(dst)
    assert not [k for k in view if ".partial" in k]
    found = 0
    for path, cps in CONVERT_CPS.items():
        layout = view.layout(path)
        if layout is None:  # not published yet: the layout the conversion gives it
            meta = json.loads(src[f"{path}/.zarray"])
            layout = ArrayLayout(path, tuple(meta["shape"]), tuple(meta["chunks"]), ".", cps)
        assert layout.chunks_per_shard == cps
        for key in dst.listdir(path):
            coords = parse_chunk_coords(key, layout.ndim, layout.separator)
            if coords is None:
                continue
            found += 1
            shard_key = f"{path}/{key}"
            data = dst[shard_key]
            index = split_whole(layout, shard_key, data)
            expected = {}
            for slot in range(layout.n_slots):
                chunk = layout.chunk_coords_of(coords, slot)
                chunk_key = format_chunk_key(path, chunk, ".")
                if layout.in_bounds(chunk) and chunk_key in src:
                    expected[slot] = src[chunk_key]
            got = {}
            for slot in np.flatnonzero(index.present()).tolist():
                offset, nbytes = index.get(slot) or (0, 0)
                got[slot] = data[offset : offset + nbytes]
            assert got == expected, f"shard {shard_key} is incomplete or differs from the source"
    return found


def check_unfinished_reads_nothing_wrong(src: DirectoryStore, dst_root: Path) -> None:
    """An unfinished destination opens as nothing, or (while publishing) reads right."""
    view = ShardedStore(DirectoryStore(str(dst_root)))
    for path in CONVERT_CPS:
        try:
            array = zarr.open_array(view, path=path, mode="r")
        except ValueError:  # ArrayNotFoundError: not published yet
            continue
        want = zarr.open_array(src, path=path, mode="r")[...]
        np.testing.assert_array_equal(array[...], want, err_msg=f"published {path} reads wrong")


def check_conversion_complete(src: DirectoryStore, dst_root: Path) -> None:
    dst = DirectoryStore(str(dst_root))
    assert ".shardedstore-convert.json" not in dst
    view = ShardedStore(dst)
    assert sorted(view.keys()) == sorted(src.keys())
    for key in src:
        if not key.rpartition("/")[2].startswith("."):
            assert view[key] == src[key], key
    converted = zarr.open_consolidated(view)
    original = zarr.open_consolidated(src)
    for path in CONVERT_CPS:
        np.testing.assert_array_equal(converted[path][...], original[path][...])
    assert dict(converted.attrs) == {"title": "crash test"}


def run_convert_kills(root: Path, n_kills: int, seed: int) -> tuple[int, int, int]:
    """Kill conversions until ``n_kills``; resume each until it completes.

    Returns ``(kills, conversions completed, shards checked after kills)``.
    """
    from shardedstore.tools.convert import convert

    rng = np.random.default_rng(seed)
    src = create_convert_source(root / "src")
    started = time.monotonic()
    convert(src, DirectoryStore(str(root / "timing")), CONVERT_CPS)
    duration = time.monotonic() - started
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    kills = completed = shards_checked = 0
    round_no = 0
    while kills < n_kills:
        dst_root = root / f"dst{round_no}"
        round_no += 1
        while True:  # resume the same destination until a run completes
            with subprocess.Popen(
                [sys.executable, "-c", CONVERTER, str(root / "src"), str(dst_root)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            ) as proc:
                assert proc.stdout is not None
                assert proc.stdout.readline() == b"ready\n", proc.communicate()[1][-3000:]
                time.sleep(float(rng.uniform(0, 1.2 * duration)))
                if proc.poll() is None and kills < n_kills:
                    os.kill(proc.pid, signal.SIGKILL)
                _out, err = proc.communicate(timeout=120)
            if proc.returncode == 0:
                check_conversion_complete(src, dst_root)
                completed += 1
                break
            assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
            kills += 1
            written = dst_root.exists() and any(
                p.is_file() and not is_temp_name(p.name) for p in dst_root.rglob("*")
            )
            if written:  # killed before writing anything: nothing to check yet
                shards_checked += check_converted_shards(src, dst_root)
                check_unfinished_reads_nothing_wrong(src, dst_root)
                if not (dst_root / ".shardedstore-convert.json").exists() and any(
                    not is_temp_name(p.name) for p in dst_root.iterdir()
                ):  # killed after the last step: the marker is gone, the copy is complete
                    check_conversion_complete(src, dst_root)
                    completed += 1
                    break
    return kills, completed, shards_checked


@pytest.mark.timeout(300)
def test_convert_killed_and_resumed_loses_nothing(tmp_path: Path) -> None:
    """``convert`` killed at random moments: every shard written is complete, and a re-run
    with the same options finishes the conversion (value by value equal to the source)."""
    kills, completed, shards = run_convert_kills(tmp_path, n_kills=10, seed=11)
    print(
        f"\nconvert: {kills} kills, {completed} conversions resumed to completion, "
        f"{shards} partial-destination shards checked"
    )
    assert kills == 10
    assert completed >= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_convert_killed_and_resumed_loses_nothing_200_kills(tmp_path: Path) -> None:
    kills, completed, shards = run_convert_kills(tmp_path, n_kills=200, seed=12)
    print(
        f"\nconvert (slow): {kills} kills, {completed} conversions resumed to completion, "
        f"{shards} partial-destination shards checked"
    )
    assert kills == 200
    assert completed >= 1


# -- durability: fsync before the rename, the folder after it ------------------------------------

TRACED_WRITER = textwrap.dedent(
    """
    import os
    import sys

    import zarr
    from zarr.storage import DirectoryStore, FSStore

    from shardedstore import ShardedStore

    kind, root, durable, log_path = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
    log = open(log_path, "w")


    def traced(name, call, describe):
        # log each real call, strace-style, then make it
        def wrapper(*args, **kwargs):
            print(f"{name}({describe(*args)})", file=log, flush=True)
            return call(*args, **kwargs)

        return wrapper


    def fd_path(fd):
        return f"{fd}<{os.readlink(f'/proc/self/fd/{fd}')}>"


    os.fsync = traced("fsync", os.fsync, fd_path)
    os.fdatasync = traced("fdatasync", os.fdatasync, fd_path)
    os.replace = traced("rename", os.replace, lambda a, b, **k: f'"{a}", "{b}"')
    os.rename = traced("rename", os.rename, lambda a, b, **k: f'"{a}", "{b}"')
    os.remove = traced("unlink", os.remove, lambda a, **k: f'"{a}"')
    os.unlink = traced("unlink", os.unlink, lambda a, **k: f'"{a}"')

    base = DirectoryStore(root) if kind == "directory" else FSStore("file://" + root)
    store = ShardedStore(base, durable=durable, partial_writes="rewrite")  # appends: test_append
    arr = zarr.open_array(store, path="x", mode="r+")
    arr[0:8, 0:8] = 7  # a partial update of shard x/0.0: read-modify-write
    arr[16:32, 0:16] = 5  # shard x/1.0, written whole
    del store["x/3.3"]  # the only chunk of shard x/1.1: the shard is deleted
    """
)


def traced_shard_writes(tmp_path: Path, kind: str, durable: bool) -> list[str]:
    """Run :data:`TRACED_WRITER` in a subprocess; return its fsync, rename and unlink calls
    on files of the array, strace-style (descriptors shown with their paths).

    Why not strace: it is a system package a fresh machine lacks. The writer wraps the real
    ``os`` functions, logging each call before making it (the package calls them through
    ``os.``, as ``tests/unit/io/test_reads.py`` counts real ``pread`` calls).
    """
    root = tmp_path / f"data-{kind}-{durable}"
    store = ShardedStore(DirectoryStore(str(root)), chunk_shards={"x": (2, 2)})
    arr = zarr.open_array(store, path="x", mode="w", shape=(32, 32), chunks=(8, 8), dtype="<i8")
    arr[:16, :16] = 1
    arr[24:, 24:] = 3
    out = tmp_path / f"trace-{kind}-{durable}.txt"
    script = tmp_path / "traced_writer.py"
    script.write_text(TRACED_WRITER)
    proc = subprocess.run(
        [sys.executable, str(script), kind, str(root), "1" if durable else "0", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    array_dir = str(root / "x")
    return [line for line in out.read_text().splitlines() if array_dir in line]


def _index(calls: list[str], pattern: str, start: int = 0) -> int:
    for i in range(start, len(calls)):
        if re.search(pattern, calls[i]):
            return i
    raise AssertionError(f"no call matching {pattern!r} in {calls[start:]}")


@pytest.mark.parametrize("kind", ["directory", "fsspec"])
def test_shard_writes_fsync_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, kind: str
) -> None:
    calls = traced_shard_writes(tmp_path, kind, durable=True)
    folder = re.escape(str(tmp_path / f"data-{kind}-True" / "x"))
    for shard in ("0.0", "1.0"):
        temp = rf"{folder}/{re.escape(shard)}\.[0-9a-f]{{32}}\.partial"
        synced = _index(calls, rf"^fsync\(\d+<{temp}>\)")
        renamed = _index(calls, rf"^rename\w*\(.*\"{temp}\", .*\"{folder}/{re.escape(shard)}\"")
        assert synced < renamed
        _index(calls, rf"^fsync\(\d+<{folder}>\)", renamed)
    removed = _index(calls, rf"^unlink\w*\(.*\"{folder}/1\.1\"")
    _index(calls, rf"^fsync\(\d+<{folder}>\)", removed)


@pytest.mark.parametrize("kind", ["directory", "fsspec"])
def test_durable_false_skips_every_fsync(tmp_path: Path, kind: str) -> None:
    calls = traced_shard_writes(tmp_path, kind, durable=False)
    assert [c for c in calls if c.startswith("rename")]  # the writes were traced
    assert [c for c in calls if "sync" in c.split("(")[0]] == []
