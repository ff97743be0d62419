"""Exceptions: every one survives pickling with its message and attributes.

Why: errors raised in dask workers or ``multiprocessing`` children come back pickled; an
exception whose ``__init__`` takes several arguments cannot be rebuilt by the default
``BaseException.__reduce__`` (it calls ``cls(*args)`` with the formatted message), so the
caller would get a ``TypeError`` instead of the error that names the shard or key.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from shardedstore import errors

CASES: list[Any] = [
    errors.ShardCorruptionError("a/0.0", "bad checksum"),
    errors.ShardingConfigError("a", "field 'dtype' disagrees"),
    errors.InvalidKeyError("../x", "leaves the store"),
    errors.MisplacedChunkError("a/1.0", "component 1", "the base store"),
    errors.RenameError("a", "b", "destination exists"),
    errors.UnlockedWriteError("partial update of shard 'a/0.0'"),
    errors.ConcurrentWriteError("a/0.0", 17),
    errors.ShardTooLargeError("a/0.0", 6 << 30, 5 << 30),
    errors.V3ExportError("a", "Zlib has no v3 equivalent"),
    errors.V3ReadError("a", "codec 'bitround' has no numcodecs equivalent"),
    errors.ReferenceExportError("a", "a MemoryStore holds no objects a URL reaches"),
]


def _all_error_classes() -> list[type[BaseException]]:
    return [
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, BaseException)
    ]


@pytest.mark.parametrize("error", CASES, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_with_message_and_attributes(error: BaseException) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert type(back) is type(error)
        assert str(back) == str(error)
        assert back.args == error.args
        assert vars(back) == vars(error)


def test_every_public_error_derives_from_the_base_class() -> None:
    # StaleIndexError never reaches a caller: the fsspec backend answers it by re-reading
    internal = {errors.StaleIndexError}
    for cls in set(_all_error_classes()) - internal:
        assert issubclass(cls, errors.ShardedStoreError), cls
    assert not issubclass(errors.StaleIndexError, errors.ShardedStoreError)
