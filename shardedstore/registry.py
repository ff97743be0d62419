"""Store types that a JSON config can name, and the config <-> store conversion.

A config is a JSON object with a ``"type"`` naming an entry of :data:`store_types`.
:func:`get_store` resolves that name through the registry only: a config never
makes shardedstore import a module or call a function it names. Configs written
by thewtex/shardedstore 0.3 (``{"name", "module", "config": {"args", "kwargs"}}``)
are read by mapping their known zarr store classes onto registered types; any
other module is refused.

Every malformed config raises :class:`~shardedstore.errors.ConfigError` with the
dotted path of the offending field, e.g. ``"shards.people.path"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeVar

import zarr.storage

from shardedstore.errors import ConfigError, ShardedStoreError, UnknownStoreTypeError

__all__ = [
    "DuplicateStoreTypeError",
    "StoreType",
    "get_store",
    "register_store_type",
    "store_config",
    "store_types",
    "unregister_store_type",
]

T = TypeVar("T")
ToConfig = Callable[[Any], Mapping[str, Any]]
FromConfig = Callable[[Mapping[str, Any]], Any]
REQUIRED: Final[Any] = object()


class DuplicateStoreTypeError(ShardedStoreError, ValueError):
    """A store type name (or class) is registered twice."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"cannot register store type {name!r}: {reason}")


@dataclass(frozen=True)
class StoreType:
    """A registered store type: how to describe a store and how to rebuild it."""

    name: str
    cls: type | None
    to_config: ToConfig | None
    from_config: FromConfig
    subclasses: bool = False


_store_types: dict[str, StoreType] = {}
store_types: Mapping[str, StoreType] = MappingProxyType(_store_types)
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
    if name in _store_types:
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
    _store_types[name] = entry
    if cls is not None:
        _by_class[cls] = entry
    return cls


def unregister_store_type(name: str) -> None:
    """Remove a store type registered with :func:`register_store_type`."""
    entry = _store_types.pop(name)
    if entry.cls is not None:
        _by_class.pop(entry.cls, None)


def join_field(prefix: str, name: str) -> str:
    """Join dotted config field paths (``join_field("shards", "a")`` -> ``"shards.a"``)."""
    return f"{prefix}.{name}" if prefix and name else prefix or name


def prefixed(error: ConfigError, prefix: str) -> ConfigError:
    """Return ``error`` with its field path placed under ``prefix``."""
    field = join_field(prefix, error.field)
    if isinstance(error, UnknownStoreTypeError):
        return UnknownStoreTypeError(field, error.type_name)
    return ConfigError(field, error.reason)


def get_field(
    config: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], default: Any = REQUIRED
) -> Any:
    """Return ``config[name]`` checked against ``kinds`` (``bool`` is never an ``int``).

    Raises
    ------
    ConfigError
        If the field is missing (and has no default) or has the wrong type.
    """
    if name not in config:
        if default is REQUIRED:
            raise ConfigError(name, "missing")
        return default
    value = config[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ConfigError(name, f"expected {names}, got {type(value).__name__} {value!r}")
    return value


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
    if not isinstance(config, Mapping):
        raise ConfigError(field, f"expected a config object, got {type(config).__name__}")
    if "type" not in config and ("module" in config or "name" in config):
        return get_store(from_legacy(config, field), field)
    try:
        name = get_field(config, "type", str)
    except ConfigError as e:
        raise prefixed(e, field) from e
    entry = _store_types.get(name)
    if entry is None:
        raise UnknownStoreTypeError(join_field(field, "type"), name)
    try:
        return entry.from_config(config)
    except ConfigError as e:
        raise prefixed(e, field) from e
    except (KeyError, TypeError) as e:
        raise ConfigError(field, f"cannot build a {name!r} store: {e!r}") from e


# -- zarr's stores ---------------------------------------------------------------------------
_SEPARATORS: Final = (None, ".", "/")


def get_separator(config: Mapping[str, Any], name: str = "dimension_separator") -> str | None:
    """Return a ``dimension_separator`` field: ``None``, ``"."`` or ``"/"``."""
    value = get_field(config, name, (str, type(None)), None)
    if value not in _SEPARATORS:
        raise ConfigError(name, f"expected '.', '/' or null, got {value!r}")
    return value  # type: ignore[no-any-return]


def _directory_config(store: zarr.storage.DirectoryStore) -> dict[str, Any]:
    return {
        "path": store.path,
        "normalize_keys": store.normalize_keys,
        "dimension_separator": store._dimension_separator,
    }


def _directory_from_config(config: Mapping[str, Any]) -> zarr.storage.DirectoryStore:
    return zarr.storage.DirectoryStore(
        get_field(config, "path", str),
        normalize_keys=get_field(config, "normalize_keys", bool, False),
        dimension_separator=get_separator(config),
    )


def _nested_config(store: zarr.storage.NestedDirectoryStore) -> dict[str, Any]:
    return {"path": store.path, "normalize_keys": store.normalize_keys}


def _nested_from_config(config: Mapping[str, Any]) -> zarr.storage.NestedDirectoryStore:
    return zarr.storage.NestedDirectoryStore(
        get_field(config, "path", str),
        normalize_keys=get_field(config, "normalize_keys", bool, False),
    )


# FSStore arguments that storage_options must not smuggle in (fs and exceptions are objects)
_FSSTORE_ARGS: Final = frozenset(
    {"url", "normalize_keys", "key_separator", "mode", "exceptions", "dimension_separator"}
    | {"fs", "check", "create", "missing_exceptions"}
)


def _fsspec_config(store: zarr.storage.FSStore) -> dict[str, Any]:
    return {
        "url": store.fs.unstrip_protocol(store.path),
        "key_separator": store._dimension_separator,
        "mode": store.mode,
        "normalize_keys": store.normalize_keys,
        "storage_options": dict(getattr(store.fs, "storage_options", {})),
    }


def _fsspec_from_config(config: Mapping[str, Any]) -> zarr.storage.FSStore:
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


def _zip_config(store: zarr.storage.ZipStore) -> dict[str, Any]:
    return {
        "path": store.path,
        # reopening with "w" or "x" would empty the file: reopen for appending (as zarr's
        # ZipStore.__setstate__ does)
        "mode": "a" if store.mode in ("w", "x") else store.mode,
        "compression": store.compression,
        "allowZip64": store.allowZip64,
        "dimension_separator": store._dimension_separator,
    }


def _zip_from_config(config: Mapping[str, Any]) -> zarr.storage.ZipStore:
    mode = get_field(config, "mode", str, "a")
    if mode not in ("r", "a", "w", "x"):
        raise ConfigError("mode", f"expected 'r', 'a', 'w' or 'x', got {mode!r}")
    return zarr.storage.ZipStore(
        get_field(config, "path", str),
        compression=get_field(config, "compression", int, 0),
        allowZip64=get_field(config, "allowZip64", bool, True),
        mode=mode,
        dimension_separator=get_separator(config),
    )


def _lmdb_config(store: zarr.storage.LMDBStore) -> dict[str, Any]:
    return {
        "path": store.path,
        "buffers": store.buffers,
        "dimension_separator": store._dimension_separator,
        "kwargs": dict(store.kwargs),
    }


def _lmdb_from_config(config: Mapping[str, Any]) -> zarr.storage.LMDBStore:
    path = get_field(config, "path", str)
    kwargs = get_field(config, "kwargs", dict, {})
    buffers = get_field(config, "buffers", bool, True)
    separator = get_separator(config)
    try:
        import lmdb  # noqa: F401
    except ImportError as e:
        raise ConfigError("type", "an 'lmdb' store needs the lmdb package") from e
    return zarr.storage.LMDBStore(path, buffers=buffers, dimension_separator=separator, **kwargs)


register_store_type(
    "directory",
    zarr.storage.DirectoryStore,
    to_config=_directory_config,
    from_config=_directory_from_config,
)
register_store_type(
    "nested_directory",
    zarr.storage.NestedDirectoryStore,
    to_config=_nested_config,
    from_config=_nested_from_config,
)
register_store_type(
    "fsspec", zarr.storage.FSStore, to_config=_fsspec_config, from_config=_fsspec_from_config
)
register_store_type(
    "zip", zarr.storage.ZipStore, to_config=_zip_config, from_config=_zip_from_config
)
register_store_type(
    "lmdb", zarr.storage.LMDBStore, to_config=_lmdb_config, from_config=_lmdb_from_config
)

# -- thewtex/shardedstore 0.3 configs --------------------------------------------------------
_LEGACY_MODULES: Final = frozenset({"zarr", "zarr.storage", "zarr._storage.store"})
_LEGACY_SHARDED_MODULES: Final = frozenset({"shardedstore"})
# class name -> (our type, name of the positional argument, keyword arguments we keep)
_LEGACY_STORES: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "DirectoryStore": ("directory", "path", ("normalize_keys", "dimension_separator")),
    "NestedDirectoryStore": ("nested_directory", "path", ("normalize_keys",)),
    "ZipStore": ("zip", "path", ("compression", "allowZip64", "mode", "dimension_separator")),
    "FSStore": ("fsspec", "url", ("normalize_keys", "mode", "dimension_separator")),
    "LMDBStore": ("lmdb", "path", ("buffers", "dimension_separator", "kwargs")),
}


def _legacy_parts(
    config: Mapping[str, Any], field: str
) -> tuple[str, str, list[Any], dict[str, Any]]:
    try:
        module = get_field(config, "module", str)
        name = get_field(config, "name", str)
        inner = get_field(config, "config", dict)
        args = get_field(inner, "args", list, [])
        kwargs = get_field(inner, "kwargs", dict, {})
    except ConfigError as e:
        raise prefixed(e, field) from e
    return module, name, args, kwargs


def from_legacy(config: Mapping[str, Any], field: str = "") -> dict[str, Any]:
    """Translate a thewtex/shardedstore 0.3 config (``name``/``module``) into ours.

    Only the zarr store classes in ``_LEGACY_STORES`` and thewtex's ``ShardedStore``
    are accepted: the ``module`` field is matched against known names, never imported.

    Raises
    ------
    ConfigError
        If the module or class is not a known store, or a field is malformed.
    """
    module, name, args, kwargs = _legacy_parts(config, field)
    if module in _LEGACY_SHARDED_MODULES and name == "ShardedStore":
        return _legacy_sharded(config, args, kwargs, field)
    if module not in _LEGACY_MODULES:
        raise ConfigError(
            join_field(field, "module"),
            f"module {module!r} is not a known store module: configs name registered store "
            "types and are never imported",
        )
    known = _LEGACY_STORES.get(name)
    if known is None:
        raise ConfigError(join_field(field, "name"), f"{module}.{name} is not a known store")
    type_name, positional, keep = known
    out: dict[str, Any] = {"type": type_name}
    if args:
        out[positional] = args[0]
    for key in keep:
        if key in kwargs:
            out[key] = kwargs[key]
    if type_name == "zip" and out.get("mode") in ("w", "x"):
        out["mode"] = "a"  # thewtex meant to avoid clobbering on re-open
    if type_name == "fsspec":
        out["key_separator"] = out.pop("dimension_separator", None)
    return out


def _legacy_sharded(
    config: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any], field: str
) -> dict[str, Any]:
    version = config.get("version", "0")
    if not isinstance(version, str) or not version.startswith("0."):
        raise ConfigError(
            join_field(field, "version"), f"unsupported thewtex/shardedstore version {version!r}"
        )
    at = join_field(field, "config")
    if not args:
        raise ConfigError(join_field(at, "args"), "missing the base store config")
    try:
        shards = get_field(kwargs, "shards", dict, {})
        dims = get_field(kwargs, "array_shard_dims", dict, {})
        splits = get_field(kwargs, "array_shards", dict, {})
    except ConfigError as e:
        raise prefixed(e, join_field(at, "kwargs")) from e
    array_shards: dict[str, Any] = {}
    for path, stores in splits.items():
        if not isinstance(stores, Mapping):
            raise ConfigError(join_field(at, f"kwargs.array_shards.{path}"), "expected an object")
        parts = {str(k).replace(".", "/"): v for k, v in stores.items()}
        n = dims.get(path, len(next(iter(parts), "").split("/")))
        array_shards[path] = {"dims": n, "factory": None, "stores": parts}
    return {
        "type": "sharded",
        "version": 1,
        "base": args[0],
        "shards": dict(shards),
        "array_shards": array_shards,
        "dimension_separator": kwargs.get("dimension_separator"),
    }
