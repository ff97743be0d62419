"""Corrupt shards: every read raises ``ShardCorruptionError`` naming the shard.

Never a ``KeyError`` (zarr would turn it into fill values), never silent fill values or
garbage, never a huge allocation, and ``verify`` reports it. Checked on every range-read
backend: ``MemoryStore`` (whole-object fallback), ``DirectoryStore`` (``pread``),
``FSStore`` over local files (fsspec ranges) and ``ZipStore`` (reads inside a member).

Also fuzzed for a bounded time: random bytes (and random indexes with a valid CRC32C) as
shards, and random ``chunk_shards`` / ``from_config`` configurations (only
``ShardingConfigError`` / ``ConfigError``, both ``ValueError``, may come out).
``pytest -m slow tests/guarantees/test_corruption.py`` fuzzes ten times longer.
"""

from __future__ import annotations

import contextlib
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import DirectoryStore, MemoryStore

from shardedstore import (
    ConfigError,
    FileLocks,
    ShardCorruptionError,
    ShardedStore,
    ShardingConfigError,
)
from shardedstore.format.shard import MISSING, ShardIndex
from shardedstore.io.base import split_whole
from tests.support.reliability import base_holding

KINDS = ["memory", "directory", "fsspec", "zip"]
SHARD = "x/0.0"  # holds chunks x/0.0, x/0.1, x/1.0, x/1.1
SHARD_CHUNKS = ["x/0.0", "x/0.1", "x/1.0", "x/1.1"]
N_SLOTS = 4
INDEX_NBYTES = 16 * N_SLOTS + 4
EXPECTED = np.arange(64, dtype="<i4").reshape(8, 8)
COUNTS: dict[str, int] = {}


def count(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


def pristine() -> dict[str, bytes]:
    """The raw keys of an (8, 8) ``<i4`` array, chunks (2, 2), 2x2 chunks per shard."""
    base = MemoryStore()
    store = ShardedStore(base, chunk_shards={"x": (2, 2)})
    arr = zarr.open_array(
        store, path="x", mode="w", shape=(8, 8), chunks=(2, 2), dtype="<i4", compressor=None
    )
    arr[...] = EXPECTED
    return {k: bytes(base[k]) for k in base}


RAW = pristine()
GOOD = RAW[SHARD]  # 4 chunks of 16 bytes, then the 68-byte index
DATA_NBYTES = len(GOOD) - INDEX_NBYTES
CHUNK_NBYTES = 16  # (2, 2) <i4 without compressor or filters
NEW_CHUNK = b"sixteen bytes..."


def entries() -> np.ndarray[Any, Any]:
    index = ShardIndex.from_bytes(GOOD[-INDEX_NBYTES:], N_SLOTS, SHARD, data_end=DATA_NBYTES)
    return index.entries.copy()


def with_entries(table: np.ndarray[Any, Any], data: bytes | None = None) -> bytes:
    """A shard with ``table`` as its index and a correct CRC32C."""
    body = GOOD[:DATA_NBYTES] if data is None else data
    return body + ShardIndex(table.astype("<u8")).to_bytes()


def set_entry(slot: int, offset: int, nbytes: int) -> bytes:
    table = entries()
    table[slot] = (offset, nbytes)
    return with_entries(table)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# slot order in the data: Morton (0, 0) (1, 0) (0, 1) (1, 1) = slots 0, 2, 1, 3
CASES: dict[str, Callable[[], bytes]] = {
    "zero-length": lambda: b"",
    "shorter-than-index": lambda: GOOD[-INDEX_NBYTES + 1 :],
    "truncated-by-one": lambda: GOOD[:-1],
    "truncated-half": lambda: GOOD[: len(GOOD) // 2],
    "index-only-data-gone": lambda: GOOD[-INDEX_NBYTES:],
    "extra-byte-at-end": lambda: GOOD + b"\x00",
    "crc-bit-flipped": lambda: flip(GOOD, 8 * len(GOOD) - 1),
    "offset-bit-flipped": lambda: flip(GOOD, 8 * DATA_NBYTES + 3),
    "offset-past-end": lambda: set_entry(3, DATA_NBYTES + 4, 4),
    "offset-2**63": lambda: set_entry(3, 2**63, 4),
    "range-past-end": lambda: set_entry(3, 56, 16),
    "range-into-index": lambda: set_entry(3, 60, 8),
    "overlapping-ranges": lambda: set_entry(1, 24, 16),  # slot 2 is at 16..32
    "nbytes-2**62": lambda: set_entry(3, 48, 2**62),
    "nbytes-2**40": lambda: set_entry(3, 48, 2**40),
    "nbytes-2**64-2": lambda: set_entry(3, 48, 2**64 - 2),
    "half-absent-offset": lambda: set_entry(3, int(MISSING), 16),
    "half-absent-nbytes": lambda: set_entry(3, 48, int(MISSING)),
    "wrapping-range": lambda: set_entry(3, 2**64 - 8, 16),
}


@contextlib.contextmanager
def base_with(kind: str, tmp: Path, shard: bytes) -> Iterator[Any]:
    """A base store of ``kind`` holding the pristine array with ``shard`` as ``x/0.0``."""
    with base_holding(kind, tmp, dict(RAW, **{SHARD: shard})) as base:
        yield base


def assert_names_shard(info: pytest.ExceptionInfo[ShardCorruptionError]) -> None:
    assert info.value.shard_key == SHARD
    assert SHARD in str(info.value)


def check_reads_raise(base: Any) -> None:
    """Every way of reading the corrupt shard raises ``ShardCorruptionError`` naming it."""
    store = ShardedStore(base)
    arr = zarr.open_array(store, path="x", mode="r")
    for read in (
        lambda: arr[...],
        lambda: arr[0:2, 0:2],
        lambda: arr[1, 3],
        lambda: store[SHARD_CHUNKS[3]],
        lambda: store.getitems(SHARD_CHUNKS, contexts={}),
    ):
        with pytest.raises(ShardCorruptionError) as info:
            read()
        assert_names_shard(info)
    np.testing.assert_array_equal(arr[4:8, 4:8], EXPECTED[4:8, 4:8])  # other shards: fine


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_shard_read_raises_shard_corruption_error(
    kind: str, case: str, tmp_path: Path
) -> None:
    shard = CASES[case]()
    with base_with(kind, tmp_path, shard) as base:
        check_reads_raise(base)
        count("named corruptions")
        if kind == "zip":
            return  # read-only
        store = ShardedStore(base)
        with pytest.raises(ShardCorruptionError) as info:  # a partial write must not drop it
            store[SHARD_CHUNKS[0]] = b"\x01" * 16
        assert_names_shard(info)
        assert bytes(base[SHARD]) == shard


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_every_bit_flip_in_the_index_is_detected(kind: str, tmp_path: Path) -> None:
    for bit in range(8 * DATA_NBYTES, 8 * len(GOOD)):
        with base_with(kind, tmp_path, flip(GOOD, bit)) as base:
            store = ShardedStore(base)
            with pytest.raises(ShardCorruptionError) as info:
                store.getitems(SHARD_CHUNKS, contexts={})
            assert_names_shard(info)
            count("bit flips")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_every_truncation_is_detected(kind: str, tmp_path: Path) -> None:
    for n in range(len(GOOD)):
        with base_with(kind, tmp_path, GOOD[:n]) as base:
            arr = zarr.open_array(ShardedStore(base), path="x", mode="r")
            with pytest.raises(ShardCorruptionError) as info:
                arr[0:4, 0:4]
            assert_names_shard(info)
            count("truncations")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_absurd_nbytes_allocates_little(kind: str, tmp_path: Path) -> None:
    """A 2**40-byte chunk in the index of a 132-byte shard: an error, not a 1 TiB buffer."""
    with base_with(kind, tmp_path, set_entry(3, 48, 2**40)) as base:
        arr = zarr.open_array(ShardedStore(base), path="x", mode="r")
        tracemalloc.start()
        try:
            with pytest.raises(ShardCorruptionError) as info:
                arr[2:4, 2:4]  # chunk (1, 1): slot 3
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert_names_shard(info)
        assert peak < 1 << 20, f"reading a 132-byte shard allocated {peak} bytes"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_reports_each_corruption(case: str, tmp_path: Path) -> None:
    from shardedstore.tools.verify import verify

    with base_with("directory", tmp_path, CASES[case]()) as base:
        report = verify(base)
    assert not report.ok
    assert SHARD in {p.key for p in report.problems if p.severity == "error"}


def test_pristine_shard_reads_back() -> None:
    """The fixture itself is sound (so the cases above fail for their corruption only)."""
    with base_with("memory", Path("."), GOOD) as base:
        arr = zarr.open_array(ShardedStore(base), path="x", mode="r")
        np.testing.assert_array_equal(arr[...], EXPECTED)


# -- fuzz: random bytes as shards -------------------------------------------------------------


def expected_chunks(data: bytes) -> dict[str, bytes] | None:
    """Decode ``data`` by the format's rules, independently of the library's decoder.

    ``None`` means the store must call it corrupt: too short, wrong CRC32C, a half-absent
    entry, a range outside the data region, or two non-empty ranges sharing a byte
    (empty ranges overlap nothing), or a chunk of another size than the raw one.
    """
    if len(data) < INDEX_NBYTES:
        return None
    data_end = len(data) - INDEX_NBYTES
    raw = data[data_end:-4]
    if crc32c.crc32c(raw) != int.from_bytes(data[-4:], "little"):
        return None
    table = [struct.unpack_from("<QQ", raw, 16 * slot) for slot in range(N_SLOTS)]
    ranges = []
    out = {}
    for slot, (offset, nbytes) in enumerate(table):
        absent = (offset == 2**64 - 1, nbytes == 2**64 - 1)
        if absent == (True, True):
            continue
        if True in absent or offset + nbytes > data_end:
            return None
        if nbytes != CHUNK_NBYTES:  # the array has no codecs: every chunk has its raw size
            return None
        ranges.append((offset, offset + nbytes))
        out[SHARD_CHUNKS[slot]] = data[offset : offset + nbytes]
    for i, (a, b) in enumerate(ranges):
        for c, d in ranges[i + 1 :]:
            if max(a, c) < min(b, d):
                return None
    return out


def check_random_shard(base: Any, data: bytes, writable: bool) -> str:
    """Read (and partly rewrite) a shard of random bytes; return the outcome."""
    expected = expected_chunks(data)
    store = ShardedStore(base)
    error: ShardCorruptionError | None = None
    try:
        got = {k: bytes(v) for k, v in store.getitems(SHARD_CHUNKS, contexts={}).items()}
    except ShardCorruptionError as e:
        error = e
    if error is not None:
        assert error.shard_key == SHARD
        assert expected is None, f"a valid shard was called corrupt: {error}"
        return "corrupt"
    assert got == expected
    for key in SHARD_CHUNKS:
        if key in got:
            assert bytes(store[key]) == got[key]
            assert store.getsize(key) == len(got[key])
        else:
            with pytest.raises(KeyError):
                store[key]
    others = {f"{i}.{j}" for i in range(4) for j in range(4)} - {"0.0", "0.1", "1.0", "1.1"}
    listed = sorted(k for k in store.listdir("x") if not k.startswith("."))
    assert listed == sorted(others | {k.partition("/")[2] for k in got})
    if writable:
        store[SHARD_CHUNKS[0]] = NEW_CHUNK
        layout = store.layout("x")
        assert layout is not None
        rewritten = bytes(base[SHARD])
        try:
            split_whole(layout, SHARD, rewritten)
        except ShardCorruptionError as e:
            raise AssertionError(f"the store wrote a shard it calls corrupt: {rewritten!r}") from e
        assert store.getitems(SHARD_CHUNKS, contexts={}) == {**got, SHARD_CHUNKS[0]: NEW_CHUNK}
    return "valid"


@st.composite
def shard_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a random data region with a random index that has a valid CRC32C."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=3 * INDEX_NBYTES))
    data = draw(st.binary(max_size=80))
    table = np.empty((N_SLOTS, 2), dtype="<u8")
    small = st.integers(0, len(data) + 8)
    for slot in range(N_SLOTS):
        kind = draw(st.sampled_from(["absent", "small", "any"]))
        if kind == "absent":
            table[slot] = (MISSING, MISSING)
        elif kind == "small":
            table[slot] = (draw(small), draw(small))
        else:
            table[slot] = (draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)))
    return with_entries(table, data)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=shard_bytes())
def test_fuzz_random_shards_raise_only_shard_corruption_error(
    kind: str, data: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    with base_with(kind, tmp, data) as base:
        outcome = check_random_shard(base, data, writable=kind != "zip")
    count(f"fuzzed shards ({outcome})")


def fuzz_loop(seconds: float, seed: int, tmp: Path) -> dict[str, int]:
    """Random bytes as shards on a DirectoryStore for ``seconds``; count the outcomes."""
    rng = np.random.default_rng(seed)
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if rng.random() < 0.5:
            data = rng.bytes(int(rng.integers(0, 3 * INDEX_NBYTES)))
        else:  # a valid shard with a few random bytes overwritten, CRC recomputed
            body = bytearray(GOOD)
            for _ in range(int(rng.integers(1, 4))):
                body[int(rng.integers(0, len(body) - 4))] = int(rng.integers(0, 256))
            table = np.frombuffer(bytes(body[DATA_NBYTES:-4]), dtype="<u8").reshape(N_SLOTS, 2)
            data = with_entries(table, bytes(body[:DATA_NBYTES]))
        with base_with("directory", tmp, data) as base:
            outcome = check_random_shard(base, data, writable=True)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@pytest.mark.timeout(120)
def test_fuzz_loop_random_shards(tmp_path: Path) -> None:
    outcomes = fuzz_loop(4.0, seed=1, tmp=tmp_path)
    print(f"\nrandom shards in 4 s: {outcomes}")
    assert sum(outcomes.values()) > 100


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fuzz_loop_random_shards_long(tmp_path: Path) -> None:
    outcomes = fuzz_loop(60.0, seed=2, tmp=tmp_path)
    print(f"\nrandom shards in 60 s: {outcomes}")


# -- fuzz: configurations ---------------------------------------------------------------------

SAFE_TEXT = st.text(alphabet="abcxyz019.*-_", max_size=8)  # relative names only: no "/"
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SAFE_TEXT, inner, max_size=4),
    max_leaves=12,
)
CHUNK_SHARDS = st.one_of(
    JSON,
    st.dictionaries(
        st.sampled_from(["*", "a", "g/b", "/a/", ""]) | SAFE_TEXT,
        st.integers(-3, 2**40)
        | st.lists(st.integers(-3, 2**40) | st.booleans() | st.floats(), max_size=4)
        | st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000))
        | JSON,
        max_size=3,
    ),
)


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=300)
@given(chunk_shards=CHUNK_SHARDS)
def test_fuzz_chunk_shards_raise_only_sharding_config_error(chunk_shards: Any) -> None:
    try:
        store = ShardedStore(MemoryStore(), chunk_shards=chunk_shards)
    except ShardingConfigError:
        count("chunk_shards rejected at construction")
        return
    for path, shape in [("a", (4, 4)), ("g/b", (5,)), ("c", (2, 2, 2))]:
        try:
            zarr.open_array(store, path=path, mode="w", shape=shape, chunks=1, dtype="u1")
        except ShardingConfigError:
            count("chunk_shards rejected at array creation")
            continue
        store[f"{path}/{'.'.join('0' * len(shape))}"] = b"\x07"
    count("chunk_shards accepted")


def mutated(config: Any, data: st.DataObject) -> Any:
    """``config`` with one random field replaced, removed or added, at any depth."""
    if not isinstance(config, dict) or not config or data.draw(st.integers(0, 3)) == 0:
        return data.draw(JSON)
    out = dict(config)
    key = data.draw(st.sampled_from(sorted(out)))
    action = data.draw(st.sampled_from(["deeper", "replace", "remove", "add"]))
    if action == "deeper":
        out[key] = mutated(out[key], data)
    elif action == "replace":
        out[key] = data.draw(JSON)
    elif action == "remove":
        del out[key]
    else:
        out[data.draw(SAFE_TEXT)] = data.draw(JSON)
    return out


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path``: relative paths in fuzzed configs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=400)
@given(data=st.data())
def test_fuzz_from_config_raises_only_config_errors(in_tmp_dir: Path, data: st.DataObject) -> None:
    valid = ShardedStore(
        DirectoryStore("d"), chunk_shards={"*": 2, "a": (1, 2)}, lock=FileLocks("locks")
    ).get_config()
    config: Any = mutated(valid, data) if data.draw(st.booleans()) else data.draw(JSON)
    error: ValueError | None = None
    try:
        store = ShardedStore.from_config(config)
    except ValueError as e:
        error = e
    if error is not None:
        assert isinstance(error, ConfigError | ShardingConfigError), f"{error!r}"
        count("configs rejected")
        return
    assert isinstance(store, ShardedStore)
    count("configs accepted")


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    print(f"\ncorruption inputs tried: {COUNTS}")
