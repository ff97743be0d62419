"""Stock store factories for array splits, and the zip converter for ``map_shards``.

``array_shard_directory_store(prefix)`` and ``array_shard_zip_store(prefix)`` return
small callables: ``factory("0/1")`` opens the store that holds index ``(0, 1)`` of a
split array. Unlike plain functions they have a ``to_config()``, so a
:class:`~shardedstore.ShardedStore` that uses them can be written to JSON.

``to_zip_store_with_prefix(prefix)`` returns the function to give
:meth:`~shardedstore.ShardedStore.map_shards`: it copies every component store,
object by object, into a zip file and reopens it read-only.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from collections.abc import Mapping
from typing import Any, ClassVar

import zarr.storage

from shardedstore.config.fields import (
    get_field,
    get_separator,
    get_zip_mode,
    prefixed,
    zip_mode_to_reopen,
)
from shardedstore.config.table import TypeTable
from shardedstore.errors import ConfigError
from shardedstore.sharding.listing import is_temp_name

__all__ = [
    "ArrayShardDirectoryStore",
    "ArrayShardZipStore",
    "ZipConverter",
    "array_shard_directory_store",
    "array_shard_zip_store",
    "factory_config",
    "factory_from_config",
    "to_zip_store_with_prefix",
]


class ArrayShardDirectoryStore:
    """Open ``DirectoryStore(f"{prefix}/{chunk_dims}.zarr")`` for each split index.

    Examples
    --------
    >>> factory = array_shard_directory_store("/data/foo", dimension_separator="/")
    >>> factory("0/1").path
    '/data/foo/0/1.zarr'
    >>> factory.to_config()["type"]
    'directory'
    """

    type_name: ClassVar[str] = "directory"

    def __init__(
        self, prefix: str, *, normalize_keys: bool = False, dimension_separator: str | None = None
    ) -> None:
        self.prefix = os.path.abspath(os.fspath(prefix))
        self.normalize_keys = normalize_keys
        self.dimension_separator = dimension_separator

    def __call__(self, chunk_dims: str) -> zarr.storage.DirectoryStore:
        path = f"{self.prefix}/{chunk_dims}.zarr"
        if self.dimension_separator == "." and not os.path.exists(path):
            # thewtex 0.3.1 names the folder with the store's separator: "0.1.zarr"
            legacy = f"{self.prefix}/{chunk_dims.replace('/', '.')}.zarr"
            path = legacy if os.path.isdir(legacy) else path
        return zarr.storage.DirectoryStore(
            path,
            normalize_keys=self.normalize_keys,
            dimension_separator=self.dimension_separator,
        )

    def to_config(self) -> dict[str, Any]:
        """Return the JSON-serialisable description of this factory."""
        return {
            "type": self.type_name,
            "prefix": self.prefix,
            "normalize_keys": self.normalize_keys,
            "dimension_separator": self.dimension_separator,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ArrayShardDirectoryStore:
        """Rebuild the factory from :meth:`to_config` output."""
        return cls(
            get_field(config, "prefix", str),
            normalize_keys=get_field(config, "normalize_keys", bool, False),
            dimension_separator=get_separator(config),
        )

    def __repr__(self) -> str:
        return f"array_shard_directory_store({self.prefix!r})"


class ArrayShardZipStore:
    """Open ``ZipStore(f"{prefix}/{chunk_dims}.zarr.zip")`` for each split index.

    Zip files cannot replace a member in place: a rewritten shard or chunk leaves a
    duplicate entry behind. Write each chunk once (or convert a finished dataset with
    :func:`to_zip_store_with_prefix`).
    """

    type_name: ClassVar[str] = "zip"

    def __init__(
        self,
        prefix: str,
        *,
        compression: int = zipfile.ZIP_STORED,
        allowZip64: bool = True,
        mode: str = "a",
        dimension_separator: str | None = None,
    ) -> None:
        self.prefix = os.path.abspath(os.fspath(prefix))
        self.compression = compression
        self.allowZip64 = allowZip64
        self.mode = mode
        self.dimension_separator = dimension_separator

    def __call__(self, chunk_dims: str) -> zarr.storage.ZipStore:
        path = f"{self.prefix}/{chunk_dims}.zarr.zip"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return zarr.storage.ZipStore(
            path,
            compression=self.compression,
            allowZip64=self.allowZip64,
            mode=self.mode,
            dimension_separator=self.dimension_separator,
        )

    def to_config(self) -> dict[str, Any]:
        """Return the JSON-serialisable description of this factory."""
        return {
            "type": self.type_name,
            "prefix": self.prefix,
            "compression": self.compression,
            "allowZip64": self.allowZip64,
            "mode": zip_mode_to_reopen(self.mode),
            "dimension_separator": self.dimension_separator,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ArrayShardZipStore:
        """Rebuild the factory from :meth:`to_config` output."""
        mode = get_zip_mode(config)
        return cls(
            get_field(config, "prefix", str),
            compression=get_field(config, "compression", int, zipfile.ZIP_STORED),
            allowZip64=get_field(config, "allowZip64", bool, True),
            mode=mode,
            dimension_separator=get_separator(config),
        )

    def __repr__(self) -> str:
        return f"array_shard_zip_store({self.prefix!r})"


_FACTORY_TYPES: TypeTable[type[ArrayShardDirectoryStore | ArrayShardZipStore]] = TypeTable(
    "array split factory"
)
_FACTORY_TYPES.add("directory", ArrayShardDirectoryStore)
_FACTORY_TYPES.add("zip", ArrayShardZipStore)


def array_shard_directory_store(prefix: str, **kwargs: Any) -> ArrayShardDirectoryStore:
    """Return a factory of ``DirectoryStore(f"{prefix}/{chunk_dims}.zarr", **kwargs)``.

    For ``array_shard_funcs`` of :class:`~shardedstore.ShardedStore`.
    """
    return ArrayShardDirectoryStore(prefix, **kwargs)


def array_shard_zip_store(prefix: str, **kwargs: Any) -> ArrayShardZipStore:
    """Return a factory of ``ZipStore(f"{prefix}/{chunk_dims}.zarr.zip", **kwargs)``.

    For ``array_shard_funcs`` of :class:`~shardedstore.ShardedStore`.
    """
    return ArrayShardZipStore(prefix, **kwargs)


def factory_config(factory: object, field: str = "") -> dict[str, Any]:
    """Return the config of a stock split factory.

    Raises
    ------
    ConfigError
        If ``factory`` is not one of the stock factories (e.g. a lambda).
    """
    if type(factory) in _FACTORY_TYPES.entries.values():
        return factory.to_config()  # type: ignore[attr-defined,no-any-return]
    raise ConfigError(
        field,
        f"cannot serialise the array split factory {factory!r}: use "
        "shardedstore.array_shard_directory_store() or array_shard_zip_store()",
    )


def factory_from_config(
    config: object, field: str = ""
) -> ArrayShardDirectoryStore | ArrayShardZipStore:
    """Rebuild a stock split factory from :func:`factory_config` output."""
    config, _, cls = _FACTORY_TYPES.entry_for(config, field)
    try:
        return cls.from_config(config)
    except ConfigError as e:
        raise prefixed(e, field) from e


class ZipConverter:
    """Copy a component store into ``{prefix}/{path or 'base'}[/{chunk_dims}].zip``.

    Called by :meth:`~shardedstore.ShardedStore.map_shards`. The stored objects
    (shards as they are) are copied one at a time, so memory stays bounded by the
    largest object; the zip file is then closed and reopened read-only.
    """

    def __init__(
        self, prefix: str, *, progress: bool = False, compression: int = zipfile.ZIP_STORED
    ) -> None:
        self.prefix = os.path.abspath(os.fspath(prefix))
        self.progress = progress
        self.compression = compression

    def zip_path(self, path: str, chunk_dims: str | None) -> str:
        """Return the zip file for the component at ``path`` (and split index)."""
        tail = f"/{chunk_dims}" if chunk_dims else ""
        return f"{self.prefix}/{path or 'base'}{tail}.zip"

    def __call__(self, store: Any, path: str, chunk_dims: str | None) -> zarr.storage.ZipStore:
        target = self.zip_path(path, chunk_dims)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        separator = getattr(store, "_dimension_separator", None)
        keys = [k for k in store if not is_temp_name(k.rpartition("/")[2])]
        out = zarr.storage.ZipStore(
            target, mode="w", compression=self.compression, dimension_separator=separator
        )
        try:
            for key in self._progress(keys, target):
                out[key] = store[key]
        finally:
            out.close()
        return zarr.storage.ZipStore(target, mode="r", dimension_separator=separator)

    def _progress(self, keys: list[str], target: str) -> Any:
        if not self.progress:
            return keys
        tqdm = importlib.import_module("tqdm.auto").tqdm  # untyped without types-tqdm
        return tqdm(keys, desc=os.path.basename(target), unit="object")


def to_zip_store_with_prefix(prefix: str, *, progress: bool = False) -> ZipConverter:
    """Return a ``map_shards`` function that copies each component into a zip file.

    Parameters
    ----------
    prefix
        Folder of the zip files: ``{prefix}/base.zip``, ``{prefix}/{mount path}.zip``
        and ``{prefix}/{array path}/{i/j}.zip`` for split array components.
    progress
        Show a tqdm progress bar per component.
    """
    return ZipConverter(prefix, progress=progress)
