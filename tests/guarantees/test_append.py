"""Partial writes on local files append to the shard (``partial_writes="append"``).

New chunk bytes and a new index go to the end of the shard file under its lock; bytes
already there never change; deletions append only an index; a shard whose dead bytes
would pass its live ones is compacted (rewritten whole); a torn append (a killed
writer) is read as the old version and cut off by the next writer; ``info`` shows dead
bytes, ``verify`` accepts the gaps and ``shardedstore compact`` frees them.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import DirectoryStore, MemoryStore, NestedDirectoryStore

from shardedstore import ShardedStore
from shardedstore.errors import ConfigError, ShardCorruptionError
from shardedstore.format.shard import index_nbytes
from shardedstore.io.journal import Journal, begin_append, journal_path, read_journal
from shardedstore.tools.cli import main
from shardedstore.tools.info import info
from shardedstore.tools.verify import verify

CPS = (4, 2)
N_SLOTS = 8
INDEX = index_nbytes(N_SLOTS)


def make(root: Path, width: int = 2, **options: Any) -> tuple[ShardedStore, Any]:
    """An (8, 2 * width) int32 array of (1, width) chunks, (4, 2) chunks per shard."""
    store = ShardedStore(DirectoryStore(str(root)), chunk_shards={"x": CPS}, **options)
    arr = zarr.open_array(
        store,
        path="x",
        mode="w",
        shape=(8, 2 * width),
        chunks=(1, width),
        dtype="<i4",
        compressor=None,
    )
    return store, arr


def shard_file(root: Path, key: str = "0.0") -> Path:
    return root / "x" / key


def test_partial_writes_append_and_never_change_bytes_already_written(tmp_path: Path) -> None:
    _, arr = make(tmp_path, width=100)  # 400-byte chunks: no compaction in 3 appends
    expected = np.zeros((8, 200), "<i4")
    arr[0] = expected[0] = 1
    path = shard_file(tmp_path)
    inode = path.stat().st_ino
    for i in (1, 2, 3):
        before = path.read_bytes()
        arr[i, :100] = expected[i, :100] = i + 10
        after = path.read_bytes()
        assert after[: len(before)] == before
        assert len(after) == len(before) + 400 + INDEX  # one chunk and an index
        assert path.stat().st_ino == inode
    reopened = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x")
    np.testing.assert_array_equal(reopened[:], expected)


def test_deletions_append_only_an_index_and_an_emptied_shard_is_removed(tmp_path: Path) -> None:
    store, arr = make(tmp_path)
    arr[0:2] = 5
    path = shard_file(tmp_path)
    size = path.stat().st_size
    store.delitems(["x/0.0"])
    assert path.stat().st_size == size + INDEX
    with pytest.raises(KeyError):
        store["x/0.0"]
    assert np.array_equal(arr[0], [0, 0, 5, 5])
    store.delitems(["x/0.1", "x/1.0", "x/1.1"])
    assert not path.exists()


def test_write_empty_chunks_false_deletes_by_appending_an_index(tmp_path: Path) -> None:
    store = ShardedStore(DirectoryStore(str(tmp_path)), chunk_shards={"x": CPS})
    arr = zarr.open_array(
        store, path="x", mode="w", shape=(8, 4), chunks=(1, 2), dtype="<i4",
        compressor=None, write_empty_chunks=False, fill_value=0,
    )  # fmt: skip
    arr[0:4] = 3
    size = shard_file(tmp_path).stat().st_size
    arr[1, :2] = 0  # the chunk becomes empty: deleted
    assert shard_file(tmp_path).stat().st_size == size + INDEX
    assert arr.nchunks_initialized == 7


def test_rewrite_policy_replaces_the_shard_whole(tmp_path: Path) -> None:
    _, arr = make(tmp_path, partial_writes="rewrite")
    arr[0] = 1
    inode = shard_file(tmp_path).stat().st_ino
    arr[1] = 2
    assert shard_file(tmp_path).stat().st_size == 4 * 8 + INDEX
    assert shard_file(tmp_path).stat().st_ino != inode


def test_shards_with_the_index_at_the_start_are_rewritten(tmp_path: Path) -> None:
    make(tmp_path)
    meta_path = tmp_path / "x" / ".zarray"
    meta = json.loads(meta_path.read_text())
    meta["compressor"]["index_location"] = "start"
    meta_path.write_text(json.dumps(meta))
    arr = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x")
    arr[0] = 1
    inode = shard_file(tmp_path).stat().st_ino
    arr[1] = 2
    assert shard_file(tmp_path).stat().st_size == 4 * 8 + INDEX
    assert shard_file(tmp_path).stat().st_ino != inode
    assert np.array_equal(arr[:2], [[1] * 4, [2] * 4])


def test_other_base_stores_keep_rewriting(tmp_path: Path) -> None:
    mem = MemoryStore()
    store = ShardedStore(mem, chunk_shards={"x": CPS})
    arr = zarr.open_array(store, path="x", mode="w", shape=(8, 4), chunks=(1, 2), dtype="<i4")
    arr[0] = 1
    arr[1] = 2
    assert np.array_equal(arr[:2], [[1] * 4, [2] * 4])
    assert not store.io.can_append


def test_nested_directory_store_appends(tmp_path: Path) -> None:
    store = ShardedStore(NestedDirectoryStore(str(tmp_path)), chunk_shards={"x": CPS})
    arr = zarr.open_array(
        store, path="x", mode="w", shape=(8, 4), chunks=(1, 2), dtype="<i4", compressor=None
    )
    arr[0] = 1
    path = tmp_path / "x" / "0" / "0"
    before = path.read_bytes()
    arr[1] = 2
    assert path.read_bytes()[: len(before)] == before
    assert np.array_equal(arr[:2], [[1] * 4, [2] * 4])


def test_a_shard_is_compacted_when_dead_bytes_would_pass_live_bytes(tmp_path: Path) -> None:
    _, arr = make(tmp_path)
    arr[0:4] = 1  # a whole shard: 8 chunks of 8 bytes, live 64 + index
    path = shard_file(tmp_path)
    live = 8 * 8 + INDEX
    sizes = []
    for i in range(20):
        arr[0, :2] = i
        sizes.append(path.stat().st_size)
        assert path.stat().st_size - live <= live  # dead bytes never pass the live ones
    assert min(sizes) == live  # compacted at least once
    assert sizes.count(live) >= 2
    assert arr[0, 0] == 19


def _tear(path: Path, root: Path, extra: bytes, *, with_journal: bool) -> int:
    """Leave ``path`` as a writer killed mid-append would: journal, then part of the bytes."""
    old = path.read_bytes()
    st = path.stat()
    if with_journal:
        record = Journal(
            st.st_dev, st.st_ino, len(old), old[-4:], len(old) + 1000, b"\x01\x02\x03\x04"
        )
        begin_append(journal_path(str(root), str(path)), record, durable=False)
    with open(path, "ab") as f:
        f.write(extra)
    return len(old)


def test_a_torn_append_reads_as_the_old_version_and_the_next_writer_cuts_it(
    tmp_path: Path,
) -> None:
    _, arr = make(tmp_path)
    arr[0:4] = 7
    path = shard_file(tmp_path)
    old_len = _tear(path, tmp_path, b"\xee" * 150, with_journal=True)
    reader = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x", mode="r")
    assert (reader[0:4] == 7).all()
    report = verify(DirectoryStore(str(tmp_path)))
    assert report.ok
    assert [(w.key, w.reason[:40]) for w in report.warnings] == [
        ("x/0.0", "150 bytes of an interrupted append follo")
    ]
    assert read_journal(journal_path(str(tmp_path), str(path))) is not None
    writer = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x")
    writer[0, :2] = 9
    data = path.read_bytes()
    assert len(data) == old_len + 8 + INDEX
    assert b"\xee" not in data[old_len:]
    assert read_journal(journal_path(str(tmp_path), str(path))) is None
    assert (reader[0, :2] == 9).all()
    assert (reader[0, 2:] == 7).all()


def test_a_torn_tail_with_no_journal_is_corruption(tmp_path: Path) -> None:
    _, arr = make(tmp_path)
    arr[0:4] = 7
    _tear(shard_file(tmp_path), tmp_path, b"\xee" * 150, with_journal=False)
    reader = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x", mode="r")
    with pytest.raises(ShardCorruptionError, match="index checksum"):
        reader[0]
    assert not verify(DirectoryStore(str(tmp_path))).ok


def test_a_journal_naming_a_replaced_file_is_ignored(tmp_path: Path) -> None:
    _, arr = make(tmp_path)
    arr[0:4] = 7
    path = shard_file(tmp_path)
    st = path.stat()
    data = path.read_bytes()
    record = Journal(st.st_dev, st.st_ino + 1, 10, data[6:10], len(data) + 5, b"abcd")
    begin_append(journal_path(str(tmp_path), str(path)), record, durable=False)
    arr[0, :2] = 8  # recovery must not cut this file to 10 bytes
    assert (arr[0] == [8, 8, 7, 7]).all()
    assert (arr[1:4] == 7).all()


def test_partial_writes_option_survives_config_and_pickle(tmp_path: Path) -> None:
    store, _ = make(tmp_path, partial_writes="rewrite")
    config = store.get_config()
    assert config["partial_writes"] == "rewrite"
    assert ShardedStore.from_config(config).get_config()["partial_writes"] == "rewrite"
    assert pickle.loads(pickle.dumps(store)).get_config()["partial_writes"] == "rewrite"
    inner = store.components()[""]
    assert pickle.loads(pickle.dumps(inner)).writer.partial_writes == "rewrite"
    del config["partial_writes"]  # a config written before the option: the default
    assert ShardedStore.from_config(config).get_config()["partial_writes"] == "append"
    config["partial_writes"] = "inplace"
    with pytest.raises(ConfigError, match="partial_writes"):
        ShardedStore.from_config(config)
    with pytest.raises(ValueError, match="partial_writes"):
        ShardedStore(DirectoryStore(str(tmp_path)), partial_writes="inplace")  # type: ignore[arg-type]


def test_info_shows_dead_bytes_verify_accepts_gaps_and_compact_frees_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, arr = make(tmp_path)
    arr[:] = np.arange(32).reshape(8, 4)
    arr[0, :2] = -1  # appended: the first chunk and the old index are now dead
    arr[4, :2] = -2
    expected = arr[:]
    before = info(DirectoryStore(str(tmp_path)))["arrays"][0]
    assert before["dead_bytes"] == 2 * (8 + INDEX)
    report = verify(DirectoryStore(str(tmp_path)))
    assert report.ok
    assert report.chunks_decoded == 16
    assert main(["info", str(tmp_path)]) == 0
    assert "dead" in capsys.readouterr().out
    assert main(["compact", str(tmp_path), "--array", "y"]) == 0  # no such array: nothing
    assert info(DirectoryStore(str(tmp_path)))["arrays"][0]["dead_bytes"] == before["dead_bytes"]
    assert main(["compact", str(tmp_path), "--array", "x", "--progress"]) == 0
    out = capsys.readouterr()
    assert "2 compacted" in out.out
    assert "compact" in out.err
    after = info(DirectoryStore(str(tmp_path)))["arrays"][0]
    assert after["dead_bytes"] == 0
    assert after["bytes_stored"] == before["bytes_stored"] - before["dead_bytes"]
    np.testing.assert_array_equal(
        zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x")[:], expected
    )
    assert verify(DirectoryStore(str(tmp_path))).ok


def test_appends_with_chunk_checksums_are_checked(tmp_path: Path) -> None:
    _, arr = make(tmp_path, chunk_checksums=True)
    arr[0] = 1
    arr[1] = 2
    path = shard_file(tmp_path)
    data = bytearray(path.read_bytes())
    size = len(data)
    assert size == 4 * 12 + 2 * INDEX - 0 * 12  # 4 chunks of 8+4 bytes, two indexes
    data[size - INDEX - 12] ^= 1  # the first byte of the last appended chunk
    path.write_bytes(bytes(data))
    fresh = zarr.open_array(ShardedStore(DirectoryStore(str(tmp_path))), path="x")
    with pytest.raises(ShardCorruptionError, match="CRC32C"):
        fresh[1]


TRACED_APPEND = """
import os, sys, zarr
from zarr.storage import DirectoryStore
from shardedstore import ShardedStore

root, durable, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
log = open(out, "w")

def name(fd):
    return os.readlink(f"/proc/self/fd/{fd}")

def traced(call, func, show):
    def wrapper(*args, **kwargs):
        log.write(f"{call} {show(*args)}\\n")
        log.flush()
        return func(*args, **kwargs)
    return wrapper

os.fsync = traced("fsync", os.fsync, name)
os.writev = traced("writev", os.writev, lambda fd, *a: name(fd))
os.remove = traced("unlink", os.remove, lambda path: path)
store = ShardedStore(DirectoryStore(root), durable=durable)
zarr.open_array(store, path="x", mode="r+")[1] = 5
"""


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_append_fsyncs_its_journal_before_and_the_shard_after(
    tmp_path: Path, durable: bool
) -> None:
    _, arr = make(tmp_path / "data", width=100)
    arr[0] = 1
    script, out = tmp_path / "traced.py", tmp_path / "trace.txt"
    script.write_text(TRACED_APPEND)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "data"), str(int(durable)), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    shard = str(shard_file(tmp_path / "data"))
    journal = journal_path(str(tmp_path / "data"), shard)
    calls = out.read_text().splitlines()
    expected = [
        f"fsync {journal}",
        f"fsync {os.path.dirname(journal)}",
        f"writev {shard}",
        f"fsync {shard}",
        f"unlink {journal}",
    ]
    if not durable:
        expected = [c for c in expected if not c.startswith("fsync")]
    assert [c for c in calls if c in expected] == expected


def test_a_local_fsstore_appends_and_reads_torn_shards_as_their_old_version(
    tmp_path: Path,
) -> None:
    from zarr.storage import FSStore

    store = ShardedStore(FSStore(f"file://{tmp_path}"), chunk_shards={"x": CPS})
    arr = zarr.open_array(
        store, path="x", mode="w", shape=(8, 200), chunks=(1, 100), dtype="<i4", compressor=None
    )
    arr[0] = 1
    path = shard_file(tmp_path)
    before, inode = path.read_bytes(), path.stat().st_ino
    arr[1] = 2
    assert path.read_bytes()[: len(before)] == before
    assert path.stat().st_ino == inode
    _tear(path, tmp_path, b"\xee" * 99, with_journal=True)
    reader = zarr.open_array(ShardedStore(FSStore(f"file://{tmp_path}")), path="x", mode="r")
    assert (reader[0] == 1).all()
    assert (reader[1] == 2).all()
    assert verify(FSStore(f"file://{tmp_path}")).ok
    arr[2] = 3  # recovers, then appends
    assert b"\xee" not in path.read_bytes()
    assert (reader[:3] == np.array([[1], [2], [3]])).all()


def test_thread_locks_fall_back_to_rewriting(tmp_path: Path) -> None:
    """Two processes appending at once would interleave bytes: appends need a lock that
    excludes other processes; with only thread locks, partial writes rewrite."""
    from shardedstore import ThreadLocks

    _, arr = make(tmp_path, width=100, lock=ThreadLocks())
    arr[0] = 1
    inode = shard_file(tmp_path).stat().st_ino
    arr[1] = 2
    assert shard_file(tmp_path).stat().st_ino != inode
