"""Model check of appended shards: random partial writes, deletes, compactions and reopens.

``AppendMachine`` applies the same random slice writes (some of fill values, which
``write_empty_chunks=False`` turns into deletions), chunk deletions, compactions
(``shardedstore.tools.compact``, with a random dead-bytes ratio for automatic ones) and
reopens (with either ``partial_writes`` policy) to a sharded array on a
``DirectoryStore`` and to a plain zarr array; after every step both read equal, and
after compactions and reopens every shard passes ``verify``.

Default tier: 40 examples of up to 30 steps; slow tier ten times more. The steps, and
how many shard writes were appends, are printed at the end (``-s``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from zarr.storage import DirectoryStore, MemoryStore

from shardedstore import ShardedStore
from shardedstore.tools.compact import compact
from shardedstore.tools.info import info
from shardedstore.tools.verify import verify

STEPS: Counter[str] = Counter()


class AppendMachine(RuleBasedStateMachine):
    """A sharded array that grows by appends reads like a plain zarr array."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="model-append-")
        STEPS["examples"] += 1

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(
        cps=st.sampled_from([(2, 2), (3, 2), (4, 4), (1, 3)]),
        compressed=st.booleans(),
        ratio=st.sampled_from([0.25, 1.0, 4.0]),
    )
    def create(self, cps: tuple[int, int], compressed: bool, ratio: float) -> None:
        kwargs: dict[str, Any] = {
            "shape": (9, 10),
            "chunks": (2, 3),
            "dtype": "<i4",
            "fill_value": 0,
            "write_empty_chunks": False,
            "compressor": numcodecs.Zstd(1) if compressed else None,
        }
        self.ratio = ratio
        self.store = self._open("append", {"a": cps})
        self.sharded = zarr.open_array(self.store, path="a", mode="w", **kwargs)
        self.plain = zarr.open_array(MemoryStore(), path="a", mode="w", **kwargs)
        self.rng = np.random.default_rng(sum(cps) * 10 + int(compressed))

    def _open(self, policy: Any, chunk_shards: Any = None) -> ShardedStore:
        store = ShardedStore(
            DirectoryStore(self.tmp),
            chunk_shards=chunk_shards,
            partial_writes=policy,
            durable=False,
        )
        store.components()[""].writer.compact_ratio = self.ratio
        return store

    def _selection(self, data: st.DataObject) -> tuple[slice, ...]:
        out = []
        for n in self.plain.shape:
            start = data.draw(st.integers(0, n - 1))
            stop = data.draw(st.integers(start + 1, min(n, start + 4)))
            out.append(slice(start, stop))
        return tuple(out)

    def _count(self, name: str) -> None:
        STEPS[name] += 1
        STEPS["steps"] += 1

    @rule(data=st.data(), fill=st.booleans())
    def write(self, data: st.DataObject, fill: bool) -> None:
        self._count("write_fill" if fill else "write")
        sel = self._selection(data)
        shape = self.plain[sel].shape
        value = np.zeros(shape, "<i4") if fill else self.rng.integers(1, 99, shape, dtype="<i4")
        self.sharded[sel] = value
        self.plain[sel] = value

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        self._count("delete")
        keys = [
            f"a/{i}.{j}" for i in range(5) for j in range(4) if data.draw(st.integers(0, 3)) == 0
        ]
        self.store.delitems(keys)
        for key in keys:
            if key in self.plain.store:
                del self.plain.store[key]

    @rule()
    def compact_all(self) -> None:
        self._count("compact")
        report = compact(DirectoryStore(self.tmp))
        STEPS["shards_compacted"] += report.shards_compacted
        assert verify(DirectoryStore(self.tmp)).ok

    @rule(policy=st.sampled_from(["append", "rewrite"]))
    def reopen(self, policy: str) -> None:
        self._count(f"reopen_{policy}")
        self.store = self._open(policy)
        self.sharded = zarr.open_array(self.store, path="a", write_empty_chunks=False)
        assert verify(DirectoryStore(self.tmp)).ok

    @invariant()
    def equal(self) -> None:
        if hasattr(self, "plain"):
            np.testing.assert_array_equal(self.sharded[:], self.plain[:])
            assert self.sharded.nchunks_initialized == self.plain.nchunks_initialized
            STEPS["dead_bytes_seen"] += int(_dead_bytes(self.tmp) > 0)


def _dead_bytes(root: str) -> int:
    return int(info(DirectoryStore(root))["totals"]["dead_bytes"]) if os.path.isdir(root) else 0


def _settings(examples: int, steps: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def test_appended_shards_read_like_a_plain_zarr_array() -> None:
    run_state_machine_as_test(AppendMachine, settings=_settings(40, 30))
    print(f"\nappend model: {dict(sorted(STEPS.items()))}")
    assert STEPS["dead_bytes_seen"] > 0  # appends did leave dead bytes to compact
    STEPS.clear()


@pytest.mark.slow
def test_appended_shards_read_like_a_plain_zarr_array_slow() -> None:
    run_state_machine_as_test(AppendMachine, settings=_settings(400, 30))
    print(f"\nappend model, slow: {dict(sorted(STEPS.items()))}")
    STEPS.clear()
