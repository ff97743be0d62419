"""Exceptions raised by shardedstore.

Every exception of the package is defined here. Every class a caller can see derives
from :class:`ShardedStoreError` and also from the builtin exception a caller already
catches, so ``except ValueError`` keeps working. The modules that defined some of them
before keep exporting those names (``shardedstore.compose.router.SplitArrayError`` and so on).
A missing key is always a plain :class:`KeyError` (the ``MutableMapping``
contract); nothing here derives from ``KeyError`` on purpose, because zarr turns
a ``KeyError`` into fill values.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentWriteError",
    "ConfigError",
    "ConvertError",
    "DimensionSeparatorError",
    "DuplicateStoreTypeError",
    "InvalidKeyError",
    "MisplacedChunkError",
    "MountOverlapError",
    "ReferenceExportError",
    "RenameError",
    "ShardCorruptionError",
    "ShardTooLargeError",
    "ShardedStoreError",
    "ShardingConfigError",
    "SplitArrayError",
    "StaleIndexError",
    "UnknownStoreTypeError",
    "UnlockedWriteError",
    "V3ExportError",
    "V3ReadError",
]


def _rebuild_error(
    cls: type[ShardedStoreError], args: tuple[object, ...], state: dict[str, object]
) -> ShardedStoreError:
    """Rebuild a pickled error without calling its ``__init__`` (see ``__reduce__``)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class ShardedStoreError(Exception):
    """Base class for every error raised by shardedstore.

    Errors pickle with their message and attributes, so an error raised in a dask worker or
    a ``multiprocessing`` child reaches the caller as itself: the default
    ``BaseException.__reduce__`` calls ``cls(*args)`` with the formatted message, which fails
    for the subclasses whose ``__init__`` takes the offending key and a reason.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


class ShardCorruptionError(ShardedStoreError, ValueError):
    """A stored shard cannot be decoded: bad checksum, truncated, bad offsets.

    Attributes
    ----------
    shard_key
        The key of the shard object in the base store.
    reason
        What was found, against what was expected.
    """

    def __init__(self, shard_key: str, reason: str) -> None:
        self.shard_key = shard_key
        self.reason = reason
        super().__init__(f"shard {shard_key!r} is corrupt: {reason}")


class InvalidKeyError(ShardedStoreError, ValueError):
    """A key tries to leave the store (``..``, absolute path, NUL, backslash)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {key!r}: {reason}")


class MisplacedChunkError(ShardedStoreError, ValueError):
    """A chunk is missing where the store expects it but present in another component store.

    Raised instead of a ``KeyError`` (which zarr reads as fill values): e.g. a chunk of a split
    array found in the base store when its component store should hold it, as
    thewtex/shardedstore 0.3.1 sometimes stores them, or a chunk that thewtex 0.3.1 stored
    under a key it shares with other chunks.

    Attributes
    ----------
    key
        The chunk key asked for.
    expected, found
        Where the chunk was looked for, and where a chunk was found instead.
    """

    def __init__(self, key: str, expected: str, found: str) -> None:
        self.key = key
        self.expected = expected
        self.found = found
        super().__init__(
            f"chunk {key!r} is missing in {expected} but a chunk for it is stored in {found}; "
            "refusing to read fill values or a chunk that may belong to another key"
        )


class RenameError(ShardedStoreError, ValueError):
    """A rename cannot be done as asked (its destination exists, or lies inside its source).

    Attributes
    ----------
    src_path, dst_path
        The paths of the rename.
    """

    def __init__(self, src_path: str, dst_path: str, reason: str) -> None:
        self.src_path = src_path
        self.dst_path = dst_path
        self.reason = reason
        super().__init__(f"cannot rename {src_path!r} to {dst_path!r}: {reason}")


class ShardingConfigError(ShardedStoreError, ValueError):
    """A ``chunk_shards`` entry does not fit the array it applies to."""

    def __init__(self, array_path: str, reason: str) -> None:
        self.array_path = array_path
        self.reason = reason
        super().__init__(f"chunk_shards for array {array_path!r}: {reason}")


class ConfigError(ShardedStoreError, ValueError):
    """A store configuration (``get_config()`` output) is malformed.

    Attributes
    ----------
    field
        The dotted path of the offending field, e.g. ``"shards.people.type"``.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"store config field {field!r}: {reason}")


class UnknownStoreTypeError(ConfigError):
    """A configuration names a store type that is not registered."""

    def __init__(self, field: str, type_name: object) -> None:
        self.type_name = type_name
        super().__init__(
            field,
            f"unknown store type {type_name!r}; register it with "
            "shardedstore.register_store_type()",
        )


class UnlockedWriteError(ShardedStoreError, RuntimeError):
    """A partial shard update was attempted where only locked updates are safe."""


class ConcurrentWriteError(ShardedStoreError, RuntimeError):
    """Other writers replaced a shard during every attempt of a conditional update.

    Raised by object stores (S3), whose read-modify-write of a shard is a PUT (or
    DELETE) conditional on the ETag that was read: after ``attempts`` conditions failed,
    the update of this shard was not applied (the shard holds another writer's version;
    other shards of the same write may have been written).

    Attributes
    ----------
    shard_key
        The key of the shard object in the base store.
    attempts
        How many conditional writes failed.
    """

    def __init__(self, shard_key: str, attempts: int) -> None:
        self.shard_key = shard_key
        self.attempts = attempts
        super().__init__(
            f"shard {shard_key!r} was replaced by another writer during each of {attempts} "
            "conditional writes; its update was not applied"
        )


class ShardTooLargeError(ShardedStoreError, ValueError):
    """A shard is larger than one conditional write can store.

    Attributes
    ----------
    shard_key
        The key of the shard object in the base store.
    size, limit
        The shard's size and the largest object one request may write, in bytes.
    """

    def __init__(self, shard_key: str, size: int, limit: int) -> None:
        self.shard_key = shard_key
        self.size = size
        self.limit = limit
        super().__init__(
            f"shard {shard_key!r} would be {size} bytes, more than the {limit} bytes one "
            "conditional PUT can write (a multipart upload carries no condition, so it is "
            "not used): use fewer chunks per shard"
        )


class V3ExportError(ShardedStoreError, ValueError):
    """An array's metadata has no Zarr v3 equivalent (e.g. a codec v3 lacks)."""

    def __init__(self, array_path: str, reason: str) -> None:
        self.array_path = array_path
        self.reason = reason
        super().__init__(f"cannot export array {array_path!r} to Zarr v3: {reason}")


class V3ReadError(ShardedStoreError, ValueError):
    """A Zarr v3 array cannot be presented to zarr 2 exactly (e.g. a codec without equivalent)."""

    def __init__(self, array_path: str, reason: str) -> None:
        self.array_path = array_path
        self.reason = reason
        super().__init__(f"cannot present Zarr v3 array {array_path!r} to zarr 2: {reason}")


class ReferenceExportError(ShardedStoreError, ValueError):
    """An array's chunks cannot be exported as byte-range references (kerchunk, Icechunk)."""

    def __init__(self, array_path: str, reason: str) -> None:
        self.array_path = array_path
        self.reason = reason
        super().__init__(f"cannot export references to array {array_path!r}: {reason}")


class DuplicateStoreTypeError(ShardedStoreError, ValueError):
    """A store type name (or class) is registered twice."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"cannot register store type {name!r}: {reason}")


class MountOverlapError(ShardedStoreError, RuntimeError):
    """Two mount or split paths overlap (one contains the other)."""

    def __init__(self, outer: str, inner: str) -> None:
        self.outer, self.inner = outer, inner
        super().__init__(f"mount {inner!r} lies inside mount {outer!r}: mounts must not overlap")


class DimensionSeparatorError(ShardedStoreError, ValueError):
    """A component store uses another ``dimension_separator`` than the sharded store."""

    def __init__(self, where: str, found: str | None, expected: str | None) -> None:
        self.where = where
        super().__init__(
            f"{where} uses dimension_separator {found!r} but the ShardedStore uses {expected!r}"
        )


class SplitArrayError(ShardedStoreError, ValueError):
    """An array cannot be split as configured (chunk size, dimensions, missing store)."""

    def __init__(self, array_path: str, reason: str) -> None:
        self.array_path = array_path
        super().__init__(f"array split {array_path!r}: {reason}")


class ConvertError(ShardedStoreError, ValueError):
    """A conversion cannot start or go on (destination in use, corrupt source...)."""


class StaleIndexError(Exception):
    """A conditional range request found the shard changed since its index was read.

    Internal to the fsspec backend (:mod:`shardedstore.io.fsspec`), which answers it by
    re-reading the index; it never reaches a caller. Deliberately not a
    :class:`ShardedStoreError`, so no ``except ShardedStoreError`` can swallow it.
    """
