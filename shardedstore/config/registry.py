"""Store types that a JSON config can name, and the config <-> store conversion.

A config is a JSON object with a ``"type"`` naming an entry of :data:`store_types`.
:func:`get_store` resolves that name through the registry only: a config never
makes shardedstore import a module or call a function it names. Configs written
by thewtex/shardedstore 0.3 (``{"name", "module", "config": {"args", "kwargs"}}``)
are read by mapping their known zarr store classes onto registered types; any
other module is refused (see :mod:`shardedstore.config.legacy`). zarr's own stores are
registered here, with the conversions of :mod:`shardedstore.config.store_types`.

Every malformed config raises :class:`~shardedstore.errors.ConfigError` with the
dotted path of the offending field, e.g. ``"shards.people.path"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import zarr.storage

from shardedstore.config import store_types as zarr_configs
from shardedstore.config.fields import (
    REQUIRED,  # noqa: F401  # re-exported
    get_separator,  # noqa: F401  # re-exported
    prefixed,
)
from shardedstore.config.legacy import from_legacy
from shardedstore.config.table import TypeTable
from shardedstore.errors import ConfigError, DuplicateStoreTypeError, UnknownStoreTypeError

__all__ = [
    "FromConfig",
    "StoreType",
    "ToConfig",
    "get_store",
    "register_store_type",
    "store_config",
    "store_types",
    "unregister_store_type",
]

T = TypeVar("T")
ToConfig = Callable[[Any], Mapping[str, Any]]
FromConfig = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class StoreType:
    """A registered store type: how to describe a store and how to rebuild it."""

    name: str
    cls: type | None
    to_config: ToConfig | None
    from_config: FromConfig
    subclasses: bool = False


_STORE_TYPES: TypeTable[StoreType] = TypeTable("store", UnknownStoreTypeError)
#: the registered store types by name, read-only
store_types: Mapping[str, StoreType] = _STORE_TYPES.entries
_by_class: dict[type, StoreType] = {}


def register_store_type(
    name: str,
    cls: type[T] | None = None,
    *,
    to_config: ToConfig | None = None,
    from_config: FromConfig | None = None,
    subclasses: bool = False,
) -> Any:
    """Register a store type under ``name``; usable as a call or a class decorator.

    ``to_config(store)`` returns the JSON-serialisable fields of a store (``"type"``
    is added); ``from_config(config)`` rebuilds the store. Both default to the
    class's own ``to_config()`` method and ``from_config()`` classmethod.

    Parameters
    ----------
    name
        The ``"type"`` written in configs.
    cls
        The store class; ``None`` (and no ``from_config``) returns a decorator.
    to_config, from_config
        Conversion functions, overriding the class's methods.
    subclasses
        Also describe instances of subclasses of ``cls`` with this type.

    Raises
    ------
    DuplicateStoreTypeError
        If ``name`` or ``cls`` is already registered.

    Examples
    --------
    >>> @register_store_type("example")
    ... class ExampleStore(dict):
    ...     def to_config(self):
    ...         return {}
    ...     @classmethod
    ...     def from_config(cls, config):
    ...         return cls()
    >>> get_store({"type": "example"})
    {}
    >>> unregister_store_type("example")
    """
    if cls is None and from_config is None:

        def decorator(klass: type[T]) -> type[T]:
            register_store_type(
                name, klass, to_config=to_config, from_config=None, subclasses=subclasses
            )
            return klass

        return decorator
    if name in store_types:
        raise DuplicateStoreTypeError(name, "the name is already registered")
    if cls is not None and cls in _by_class:
        raise DuplicateStoreTypeError(name, f"{cls.__qualname__} is already registered")
    if to_config is None and cls is not None:
        to_config = getattr(cls, "to_config", None)
    if from_config is None:
        from_config = getattr(cls, "from_config", None)
        if from_config is None:
            raise TypeError(f"store type {name!r}: no from_config given and the class has none")
    entry = StoreType(name, cls, to_config, from_config, subclasses)
    _STORE_TYPES.add(name, entry)
    if cls is not None:
        _by_class[cls] = entry
    return cls


def unregister_store_type(name: str) -> None:
    """Remove a store type registered with :func:`register_store_type`."""
    entry = _STORE_TYPES.remove(name)
    if entry.cls is not None:
        _by_class.pop(entry.cls, None)


def _lookup(store: Any) -> StoreType | None:
    for klass in type(store).__mro__:
        entry = _by_class.get(klass)
        if entry is not None and (klass is type(store) or entry.subclasses):
            return entry
    return None


def store_config(store: Any, field: str = "") -> dict[str, Any]:
    """Return the JSON-serialisable config of ``store``.

    Raises
    ------
    ConfigError
        If the store's type is not registered (``MemoryStore`` never is: its data
        lives only in this process) or its config is not JSON-serialisable.
    """
    entry = _lookup(store)
    if entry is None or entry.to_config is None:
        kind = type(store).__qualname__
        if isinstance(store, zarr.storage.MemoryStore | dict):
            reason = f"a {kind} lives only in this process and cannot be rebuilt from a config"
        else:
            reason = f"store type {kind} is not registered (shardedstore.register_store_type)"
        raise ConfigError(field, reason)
    try:
        fields = dict(entry.to_config(store))
    except ConfigError as e:
        raise prefixed(e, field) from e
    config = {"type": entry.name, **{k: v for k, v in fields.items() if k != "type"}}
    try:
        json.dumps(config)
    except (TypeError, ValueError) as e:
        raise ConfigError(field, f"the {entry.name!r} config is not JSON-serialisable: {e}") from e
    return config


def get_store(config: object, field: str = "") -> Any:
    """Instantiate the store described by ``config``.

    Raises
    ------
    UnknownStoreTypeError
        If ``config["type"]`` names no registered store.
    ConfigError
        If ``config`` is malformed; ``error.field`` is the dotted path of the field.
    """
    if isinstance(config, Mapping) and "type" not in config and config.keys() & {"module", "name"}:
        return get_store(from_legacy(config, field), field)
    config, name, entry = _STORE_TYPES.entry_for(config, field)
    try:
        return entry.from_config(config)
    except ConfigError as e:
        raise prefixed(e, field) from e
    except (KeyError, TypeError) as e:
        raise ConfigError(field, f"cannot build a {name!r} store: {e!r}") from e


# -- zarr's stores ---------------------------------------------------------------------------
register_store_type(
    "directory",
    zarr.storage.DirectoryStore,
    to_config=zarr_configs.directory_config,
    from_config=zarr_configs.directory_from_config,
)
register_store_type(
    "nested_directory",
    zarr.storage.NestedDirectoryStore,
    to_config=zarr_configs.nested_config,
    from_config=zarr_configs.nested_from_config,
)
register_store_type(
    "fsspec",
    zarr.storage.FSStore,
    to_config=zarr_configs.fsspec_config,
    from_config=zarr_configs.fsspec_from_config,
)
register_store_type(
    "zip",
    zarr.storage.ZipStore,
    to_config=zarr_configs.zip_config,
    from_config=zarr_configs.zip_from_config,
)
register_store_type(
    "lmdb",
    zarr.storage.LMDBStore,
    to_config=zarr_configs.lmdb_config,
    from_config=zarr_configs.lmdb_from_config,
)
