"""The ``shardedstore`` command line, in-process (``main``) and as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
import zarr.storage

from shardedstore import ShardedStore
from shardedstore.tools.cli import main
from shardedstore.tools.verify import verify
from shardedstore.tools.walk import MARKER_KEY

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardedstore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def src(tmp_path: Path) -> str:
    """A plain DirectoryStore with a group, attributes and two arrays."""
    path = str(tmp_path / "src")
    root = zarr.open_group(path, mode="w")
    root.attrs["title"] = "cli"
    a = root.create_dataset("a", shape=(10, 10), chunks=(2, 2), dtype="<i4", compressor=None)
    a[:6, :] = np.arange(60).reshape(6, 10)  # 15 of 25 chunks
    b = root.create_group("g").create_dataset("b", data=np.arange(100.0), chunks=10)
    b.attrs["units"] = "m"
    return path


def test_convert_info_verify_in_process(src: str, tmp_path: Path, capsys: Any) -> None:
    dst = str(tmp_path / "dst")
    assert main(["convert", src, dst, "-c", "2", "--array", "g/b=4", "--no-progress"]) == 0
    assert "2 arrays (2 sharded), 2 groups" in capsys.readouterr().out
    assert main(["info", dst, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    a, b = doc["arrays"]
    shards = sorted((tmp_path / "dst" / "a").glob("[0-9]*"))
    assert [s.name for s in shards] == ["0.0", "0.1", "0.2", "1.0", "1.1", "1.2"]
    assert a == {
        "path": "a",
        "shape": [10, 10],
        "dtype": "<i4",
        "chunks": [2, 2],
        "compressor": None,
        "dimension_separator": ".",
        "chunks_in_grid": 25,
        "sharded": True,
        "chunks_per_shard": [2, 2],
        "shard_shape": [4, 4],
        "chunk_checksums": False,
        "zarr_format": 2,
        "objects": 6,
        "objects_unsharded": 15,
        "chunks_present": 15,
        "bytes_stored": sum(s.stat().st_size for s in shards),
        "dead_bytes": 0,
        "shard_fill_ratio": 0.75,  # 15 present of the 20 in-bounds slots of 6 shards
        "corrupt_shards": 0,
    }
    assert (b["path"], b["objects"], b["objects_unsharded"]) == ("g/b", 3, 10)
    assert doc["groups"] == ["", "g"]
    assert doc["totals"]["objects"] == 9
    assert main(["verify", dst]) == 0
    assert main(["info", dst]) == 0
    assert "shard fill 75.0%" in capsys.readouterr().out


def test_verify_exit_status_and_one_line_per_problem(src: str, tmp_path: Path, capsys: Any) -> None:
    dst = tmp_path / "dst"
    assert main(["convert", src, str(dst), "-c", "2"]) == 0
    shard = dst / "a" / "1.0"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 1
    shard.write_bytes(bytes(data))
    (dst / "g" / "b" / "0").write_bytes(b"")
    (dst / "a" / f"0.0.{'1' * 32}.partial").write_bytes(b"")
    capsys.readouterr()
    assert main(["verify", str(dst)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("a/1.0: index checksum is")
    assert lines[1] == "g/b/0: 0 bytes cannot hold a 36-byte index"
    assert (
        lines[2]
        == f"warning: a/0.0.{'1' * 32}.partial: leftover temporary file of an interrupted write"
    )


def test_warnings_alone_pass_unless_strict(src: str, tmp_path: Path) -> None:
    (Path(src) / "a" / f"0.0.{'2' * 32}.partial").write_bytes(b"")
    assert main(["verify", src]) == 0
    assert main(["verify", src, "--strict"]) == 1


def test_errors_are_one_line_with_status_2(src: str, tmp_path: Path, capsys: Any) -> None:
    cases = [
        ["verify", str(tmp_path / "missing")],
        ["convert", src, src, "-c", "2"],  # not empty
        ["convert", src, str(tmp_path / "d"), "--array", "a=2,2,2"],
        ["convert", src, str(tmp_path / "d"), "-c", "2", "--unshard"],
        ["info", src, "-o", "anon=true"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("shardedstore: error: "), err
        assert err.count("\n") == 1, err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "verify", str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError):
        main(["verify", str(tmp_path / "missing"), "--debug"])


def test_usage_errors_exit_2(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "a", "b", "-c", "two"])
    assert exc.value.code == 2
    assert "expected N or N,N,..." in capsys.readouterr().err


def test_export_v3_dry_run_writes_nothing(src: str, tmp_path: Path, capsys: Any) -> None:
    dst = tmp_path / "dst"
    assert main(["convert", src, str(dst), "-c", "2"]) == 0
    capsys.readouterr()
    assert main(["export-v3", str(dst), "--dry-run"]) == 0
    keys = capsys.readouterr().out.split()
    assert keys == ["a/zarr.json", "g/b/zarr.json", "g/zarr.json", "zarr.json"]
    assert not (dst / "zarr.json").exists()
    assert main(["export-v3", str(dst)]) == 0
    meta = json.loads((dst / "a" / "zarr.json").read_text())
    assert meta["codecs"][0]["name"] == "sharding_indexed"


def test_zip_and_fsspec_urls_with_storage_options(src: str, tmp_path: Path, capsys: Any) -> None:
    zipped = str(tmp_path / "out.zip")
    url = (tmp_path / "fs").as_uri()  # file://, an FSStore
    assert main(["convert", src, zipped, "-c", "2"]) == 0
    assert main(["convert", src, zipped, "-c", "2"]) == 2  # exists: never overwritten
    assert "exists" in capsys.readouterr().err
    assert main(["convert", zipped, url, "--unshard", "-o", "auto_mkdir=true"]) == 0
    try:
        assert main(["convert", url, "memory://cli/ds.zarr", "-c", "5"]) == 0
        assert main(["verify", "memory://cli/ds.zarr"]) == 0
        capsys.readouterr()
        assert main(["info", "memory://cli/ds.zarr", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["totals"]["objects"] == 1 + 2  # a, g/b
        store = ShardedStore(zarr.storage.FSStore("memory://cli/ds.zarr"))
        np.testing.assert_array_equal(zarr.open_group(store)["g/b"][...], np.arange(100.0))
    finally:
        zarr.storage.FSStore("memory://cli").fs.rm("cli", recursive=True)


def test_progress_bar_goes_to_stderr(src: str, tmp_path: Path, capsys: Any) -> None:
    assert main(["convert", src, str(tmp_path / "d"), "-c", "2", "--progress"]) == 0
    assert "shard" in capsys.readouterr().err


def test_progress_is_one_overall_bar_plus_the_current_array(tmp_path: Path, capsys: Any) -> None:
    root = zarr.open_group(str(tmp_path / "many"), mode="w")
    for i in range(12):
        root.create_dataset(f"a{i:02}", data=np.arange(40), chunks=10)
    assert (
        main(["convert", str(tmp_path / "many"), str(tmp_path / "d"), "-c", "2", "--progress"]) == 0
    )
    err = capsys.readouterr().err
    assert "arrays: 100%" in err
    assert "12/12" in err
    assert "a05" in err  # the current array's bar, reset for each array


def test_info_finding_nothing_is_a_one_line_error(src: str, tmp_path: Path, capsys: Any) -> None:
    assert main(["info", src, "--subpath", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err == f"shardedstore: error: no zarr array or group at {src} (subpath 'nope')\n"
    )
    assert main(["info", src, "--subpath", "g"]) == 0
    assert "total: 1 arrays, 1 groups" in capsys.readouterr().out


def test_info_and_verify_describe_a_store_of_only_v3_metadata(src: str, capsys: Any) -> None:
    from shardedstore.tools.export_v3 import export_v3

    export_v3(zarr.storage.DirectoryStore(src))
    for v2 in Path(src).rglob(".z*"):
        v2.unlink()
    assert main(["info", src, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(a["path"], a["zarr_format"], a["sharded"]) for a in doc["arrays"]] == [
        ("a", 3, False),
        ("g/b", 3, False),
    ]
    assert main(["verify", src]) == 0
    assert "0 errors" in capsys.readouterr().err


def test_info_into_a_closed_pipe_prints_no_traceback(src: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardedstore", "info", "--json", src],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    _, err = proc.communicate(timeout=120)
    assert err == b""
    assert proc.returncode == 141
    shell = subprocess.run(
        f"{sys.executable} -m shardedstore info --json {src} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert (shell.stdout, shell.stderr) == ("{\n", "")


def test_subprocess_entry_points(src: str, tmp_path: Path) -> None:
    assert run("--help").returncode == 0
    done = run("convert", src, str(tmp_path / "dst"), "--chunks-per-shard", "2")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    assert run("verify", str(tmp_path / "dst")).returncode == 0
    bad = run("info", str(tmp_path / "nowhere"))
    assert bad.returncode == 2
    assert bad.stderr == f"shardedstore: error: no such directory: {tmp_path / 'nowhere'}\n"
    assert "Traceback" in run("--debug", "info", str(tmp_path / "nowhere")).stderr


def _big_source(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("a", data=np.arange(64).reshape(8, 8), chunks=(2, 2))
    big = root.create_dataset(
        "b", shape=(300, 64, 64), chunks=(1, 16, 16), dtype="<f4", compressor=numcodecs.Zstd()
    )
    big[:] = np.random.default_rng(3).random((300, 64, 64), dtype=np.float32)
    return {"a": root["a"][...], "b": big[...]}


def _wait_for_shards(proc: subprocess.Popen[bytes], folder: Path, count: int) -> bool:
    """Wait until ``folder`` holds ``count`` shards; ``False`` if ``proc`` ended first."""
    while proc.poll() is None:
        if folder.is_dir() and sum(1 for n in os.listdir(folder) if "partial" not in n) >= count:
            return True
        time.sleep(0.002)
    return False


def test_convert_killed_with_sigkill_resumes_to_an_equal_verified_copy(tmp_path: Path) -> None:
    expected = _big_source(tmp_path / "src")
    dst = tmp_path / "dst"
    argv = [sys.executable, "-m", "shardedstore", "convert", str(tmp_path / "src"), str(dst)]
    argv += ["-c", "1,2,2"]  # b: 1200 shards
    kills = 0
    for count in (100, 500, 900):
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        killed = _wait_for_shards(proc, dst / "b", count)
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        if not killed:
            break  # it finished first: nothing more to interrupt
        kills += 1
        assert json.loads((dst / MARKER_KEY).read_text())["done"] == ["a"]
        report = verify(zarr.storage.DirectoryStore(str(dst)))
        # every shard written is whole (old or new, never torn); the copy is unfinished
        assert [p.key for p in report.errors] == [MARKER_KEY], report.errors
        assert report.shards_checked >= count
        assert not (dst / ".zgroup").exists()  # nothing to open before the copy is complete
        assert run("verify", str(dst)).returncode == 1
        described = run("info", str(dst))
        assert (described.returncode, described.stderr.count("\n")) == (2, 1)
        assert "interrupted `shardedstore convert`" in described.stderr
    print(f"{kills} SIGKILLs before the final run")
    assert kills >= 1, "the conversion finished before it could be killed"
    final = run("convert", str(tmp_path / "src"), str(dst), "-c", "1,2,2")
    assert final.returncode == 0, final.stderr
    assert "resumed: 1 arrays and" in final.stdout
    assert not (dst / MARKER_KEY).exists()
    assert verify(zarr.storage.DirectoryStore(str(dst))).problems == []
    group = zarr.open_group(ShardedStore(zarr.storage.DirectoryStore(str(dst))), mode="r")
    for name, values in expected.items():
        np.testing.assert_array_equal(group[name][...], values)
