"""Configs of zarr's own stores: ``to_config`` / ``from_config`` per store type.

:mod:`shardedstore.config.registry` registers these under ``"directory"``,
``"nested_directory"``, ``"fsspec"``, ``"zip"`` and ``"lmdb"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import zarr.storage

from shardedstore.config.fields import get_field, get_separator, get_zip_mode, zip_mode_to_reopen
from shardedstore.errors import ConfigError

__all__ = [
    "directory_config",
    "directory_from_config",
    "fsspec_config",
    "fsspec_from_config",
    "lmdb_config",
    "lmdb_from_config",
    "nested_config",
    "nested_from_config",
    "zip_config",
    "zip_from_config",
]


def directory_config(store: zarr.storage.DirectoryStore) -> dict[str, Any]:
    return {
        "path": store.path,
        "normalize_keys": store.normalize_keys,
        "dimension_separator": store._dimension_separator,
    }


def directory_from_config(config: Mapping[str, Any]) -> zarr.storage.DirectoryStore:
    return zarr.storage.DirectoryStore(
        get_field(config, "path", str),
        normalize_keys=get_field(config, "normalize_keys", bool, False),
        dimension_separator=get_separator(config),
    )


def nested_config(store: zarr.storage.NestedDirectoryStore) -> dict[str, Any]:
    return {"path": store.path, "normalize_keys": store.normalize_keys}


def nested_from_config(config: Mapping[str, Any]) -> zarr.storage.NestedDirectoryStore:
    return zarr.storage.NestedDirectoryStore(
        get_field(config, "path", str),
        normalize_keys=get_field(config, "normalize_keys", bool, False),
    )


# FSStore arguments that storage_options must not smuggle in (fs and exceptions are objects)
_FSSTORE_ARGS: Final = frozenset(
    {"url", "normalize_keys", "key_separator", "mode", "exceptions", "dimension_separator"}
    | {"fs", "check", "create", "missing_exceptions"}
)


def fsspec_config(store: zarr.storage.FSStore) -> dict[str, Any]:
    return {
        "url": store.fs.unstrip_protocol(store.path),
        "key_separator": store._dimension_separator,
        "mode": store.mode,
        "normalize_keys": store.normalize_keys,
        "storage_options": dict(getattr(store.fs, "storage_options", {})),
    }


def fsspec_from_config(config: Mapping[str, Any]) -> zarr.storage.FSStore:
    options = dict(get_field(config, "storage_options", dict, {}))
    for name in options:
        if name in _FSSTORE_ARGS:
            raise ConfigError(f"storage_options.{name}", "is an FSStore argument, not an option")
    return zarr.storage.FSStore(
        get_field(config, "url", str),
        normalize_keys=get_field(config, "normalize_keys", bool, False),
        key_separator=get_separator(config, "key_separator"),
        mode=get_field(config, "mode", str, "w"),
        **options,
    )


def zip_config(store: zarr.storage.ZipStore) -> dict[str, Any]:
    return {
        "path": store.path,
        # reopening with "w" or "x" would empty the file: reopen for appending (as zarr's
        # ZipStore.__setstate__ does)
        "mode": zip_mode_to_reopen(store.mode),
        "compression": store.compression,
        "allowZip64": store.allowZip64,
        "dimension_separator": store._dimension_separator,
    }


def zip_from_config(config: Mapping[str, Any]) -> zarr.storage.ZipStore:
    mode = get_zip_mode(config)
    return zarr.storage.ZipStore(
        get_field(config, "path", str),
        compression=get_field(config, "compression", int, 0),
        allowZip64=get_field(config, "allowZip64", bool, True),
        mode=mode,
        dimension_separator=get_separator(config),
    )


def lmdb_config(store: zarr.storage.LMDBStore) -> dict[str, Any]:
    return {
        "path": store.path,
        "buffers": store.buffers,
        "dimension_separator": store._dimension_separator,
        "kwargs": dict(store.kwargs),
    }


def lmdb_from_config(config: Mapping[str, Any]) -> zarr.storage.LMDBStore:
    path = get_field(config, "path", str)
    kwargs = get_field(config, "kwargs", dict, {})
    buffers = get_field(config, "buffers", bool, True)
    separator = get_separator(config)
    try:
        import lmdb  # noqa: F401
    except ImportError as e:
        raise ConfigError("type", "an 'lmdb' store needs the lmdb package") from e
    return zarr.storage.LMDBStore(path, buffers=buffers, dimension_separator=separator, **kwargs)
