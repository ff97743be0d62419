"""Reading JSON config fields: typed access and dotted field paths in errors.

Every malformed config raises :class:`~shardedstore.errors.ConfigError` with the
dotted path of the offending field, e.g. ``"shards.people.path"``: a nested
reader's error is placed under its parent's field with :func:`prefixed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shardedstore.errors import ConfigError, UnknownStoreTypeError

__all__ = [
    "REQUIRED",
    "get_field",
    "get_separator",
    "get_zip_mode",
    "join_field",
    "prefixed",
    "zip_mode_to_reopen",
]

REQUIRED: Final[Any] = object()
_SEPARATORS: Final = (None, ".", "/")


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


def get_separator(config: Mapping[str, Any], name: str = "dimension_separator") -> str | None:
    """Return a ``dimension_separator`` field: ``None``, ``"."`` or ``"/"``."""
    value = get_field(config, name, (str, type(None)), None)
    if value not in _SEPARATORS:
        raise ConfigError(name, f"expected '.', '/' or null, got {value!r}")
    return value  # type: ignore[no-any-return]


def zip_mode_to_reopen(mode: str) -> str:
    """Return the mode a config records for a zip file opened with ``mode``.

    A zip file opened again with ``"w"`` (or ``"x"``) would be emptied (or refused), so
    a config reopens it for appending.
    """
    return "a" if mode in ("w", "x") else mode


def get_zip_mode(config: Mapping[str, Any]) -> str:
    """Read ``config["mode"]`` of a zip store or factory (default ``"a"``).

    Raises
    ------
    ConfigError
        If it is no zip file mode.
    """
    mode = str(get_field(config, "mode", str, "a"))
    if mode not in ("r", "a", "w", "x"):
        raise ConfigError("mode", f"expected 'r', 'a', 'w' or 'x', got {mode!r}")
    return mode
