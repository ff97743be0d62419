"""Translation of thewtex/shardedstore 0.3 configs (``name``/``module``) into ours.

thewtex's configs name a module and a class (``{"name", "module", "config":
{"args", "kwargs"}}``). They are read by mapping the known zarr store classes and
thewtex's ``ShardedStore`` onto registered types; the module is matched against
known names, never imported, and any other module is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shardedstore.config.fields import get_field, join_field, prefixed, zip_mode_to_reopen
from shardedstore.errors import ConfigError

__all__ = ["from_legacy"]

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
    if type_name == "zip" and isinstance(out.get("mode"), str):
        out["mode"] = zip_mode_to_reopen(out["mode"])  # thewtex meant not to clobber
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
