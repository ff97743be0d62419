"""The JSON config of :class:`~shardedstore.ShardedStore`: its parts <-> config fields.

``ShardedStore.get_config`` writes ``{"type": "sharded", "version", "base",
"shards", "array_shards", "dimension_separator", "chunk_shards", "lock",
"index_cache_size", "chunk_checksums", "durable", "partial_writes"}``; :func:`parse_config` checks such a config
(or translates a thewtex/shardedstore 0.3 one) and builds the arguments of
``ShardedStore._from_parts``. Every malformed field raises
:class:`~shardedstore.errors.ConfigError` with its dotted path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shardedstore.compose.components import normalize_paths
from shardedstore.compose.factories import factory_config, factory_from_config
from shardedstore.compose.splits import SplitArray, SplitSpec, split_index
from shardedstore.config.fields import get_field, get_separator
from shardedstore.config.legacy import from_legacy
from shardedstore.config.registry import get_store, store_config
from shardedstore.errors import ConfigError, ShardingConfigError
from shardedstore.format.layout import (
    CHUNK_CHECKSUMS_DEFAULT,
    ChunksPerShard,
    normalize_chunk_shards,
)
from shardedstore.format.shard import PartialWrites, parse_partial_writes
from shardedstore.locks import LockProvider, lock_provider_from_config

__all__ = ["CONFIG_VERSION", "lock_config", "parse_config", "parse_split", "split_config"]

#: version of the layout written by :meth:`ShardedStore.get_config`
#: 2: no ``"lock"`` (null) means the base store's default lock, and ``"thread"`` is an opt-out
CONFIG_VERSION: Final = 2


def split_config(at: str, split: SplitArray, stores: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``array_shards`` entry (at field ``at``) of a split with these stores."""
    factory = split.factory
    return {
        "dims": split.dims,
        "factory": None if factory is None else factory_config(factory, f"{at}.factory"),
        "stores": {i: store_config(c.base, f"{at}.stores.{i}") for i, c in stores.items()},
    }


def lock_config(lock: LockProvider) -> dict[str, Any]:
    """Return the config of a lock provider (the ``"lock"`` field)."""
    try:
        return dict(lock.to_config())
    except AttributeError as e:
        raise ConfigError("lock", f"{lock!r} has no to_config()") from e


def parse_config(config: object) -> dict[str, Any]:
    """Return the ``_from_parts`` arguments of a config (ours or thewtex 0.3's).

    Raises
    ------
    ConfigError
        If the config is malformed, of a newer version, or names an unknown store
        type or a module; ``error.field`` is the dotted path of the field.
    """
    if not isinstance(config, Mapping):
        raise ConfigError("", f"expected a config object, got {type(config).__name__}")
    if "type" not in config and "module" in config:
        config = from_legacy(config)
    if get_field(config, "type", str) != "sharded":
        raise ConfigError("type", f"expected 'sharded', got {config['type']!r}")
    version = get_field(config, "version", int)
    if not 1 <= version <= CONFIG_VERSION:
        raise ConfigError(
            "version", f"config version {version} is newer than this library's {CONFIG_VERSION}"
        )
    if version == 1 and config.get("lock") == {"type": "thread"}:
        # version 1 wrote "thread" for every store: thread locks were the default then
        config = {**config, "lock": None}
    return _parse_parts(config)


def parse_split(at: str, split: object) -> SplitSpec:
    """Build the :class:`SplitSpec` of one ``array_shards`` entry (at field ``at``)."""
    if not isinstance(split, Mapping):
        raise ConfigError(at, f"expected an object, got {type(split).__name__}")
    try:
        dims = get_field(split, "dims", int)
        factory = get_field(split, "factory", (dict, type(None)), None)
        stores = get_field(split, "stores", dict, {})
    except ConfigError as e:
        raise ConfigError(f"{at}.{e.field}", e.reason) from e
    given = {}
    for index, sub in stores.items():
        try:
            norm = split_index(index, dims)
        except ValueError as e:
            raise ConfigError(f"{at}.stores.{index}", str(e)) from e
        given[norm] = get_store(sub, f"{at}.stores.{index}")
    made = None if factory is None else factory_from_config(factory, f"{at}.factory")
    return SplitSpec(dims, made, given)


def _parse_lock(config: Mapping[str, Any]) -> LockProvider | None:
    lock = get_field(config, "lock", (dict, type(None)), None)
    return None if lock is None else lock_provider_from_config(lock, "lock")


def _parse_chunk_shards(config: Mapping[str, Any]) -> dict[str, ChunksPerShard]:
    try:
        return normalize_chunk_shards(get_field(config, "chunk_shards", dict, {}))
    except ShardingConfigError as e:
        raise ConfigError(f"chunk_shards.{e.array_path}", e.reason) from e


def _parse_partial_writes(config: Mapping[str, Any]) -> PartialWrites:
    value = get_field(config, "partial_writes", str, "append")
    try:
        return parse_partial_writes(value)
    except ValueError as e:
        raise ConfigError("partial_writes", str(e)) from e


def _parse_parts(config: Mapping[str, Any]) -> dict[str, Any]:
    """Build the ``_from_parts`` arguments from a (version-checked) config."""
    splits = normalize_paths(
        {
            p: parse_split(f"array_shards.{p}", s)
            for p, s in get_field(config, "array_shards", dict, {}).items()
        }
    )
    provider = _parse_lock(config)
    chunk_shards = _parse_chunk_shards(config)
    cache = get_field(config, "index_cache_size", int, 4096)
    if cache < 0:
        raise ConfigError("index_cache_size", f"must be >= 0, got {cache}")
    return {
        "base": get_store(get_field(config, "base", dict), "base"),
        "mounts": normalize_paths(
            {
                p: get_store(c, f"shards.{p}")
                for p, c in get_field(config, "shards", dict, {}).items()
            }
        ),
        "splits": splits,
        "dimension_separator": get_separator(config),
        "chunk_shards": chunk_shards,
        "lock": provider,
        "index_cache_size": cache,
        "chunk_checksums": get_field(config, "chunk_checksums", bool, CHUNK_CHECKSUMS_DEFAULT),
        "durable": get_field(config, "durable", bool, True),
        "partial_writes": _parse_partial_writes(config),
    }
