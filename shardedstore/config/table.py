"""The one registry helper: a ``"type"`` name in a JSON config -> what builds it.

Three tables use it: store types (:mod:`shardedstore.config.registry`), array split
factories (:mod:`shardedstore.compose.factories`) and lock providers
(:mod:`shardedstore.locks`). Each keeps its entries private and shows them read-only, as
fsspec's registry does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from shardedstore.config.fields import get_field, join_field, prefixed
from shardedstore.errors import ConfigError, DuplicateStoreTypeError

__all__ = ["TypeTable"]

E = TypeVar("E")


class TypeTable(Generic[E]):
    """Entries by ``"type"`` name, for one kind of thing a config can name.

    Parameters
    ----------
    kind
        What the entries build, for error messages (``"store"``, ``"lock provider"``).
    unknown
        Builds the error for a name with no entry, from ``(field, name)``; by default a
        :class:`~shardedstore.errors.ConfigError` on ``<field>.type``.
    """

    def __init__(self, kind: str, unknown: Callable[[str, str], ConfigError] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, E] = {}
        #: the entries, read-only
        self.entries: Mapping[str, E] = MappingProxyType(self._entries)
        self._unknown = unknown

    def add(self, name: str, entry: E) -> E:
        """Register ``entry`` under ``name``; a name is registered once."""
        if name in self._entries:
            raise DuplicateStoreTypeError(name, "the name is already registered")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> E:
        """Unregister ``name`` and return its entry."""
        return self._entries.pop(name)

    def entry_for(self, config: object, field: str = "") -> tuple[Mapping[str, Any], str, E]:
        """Return ``(config, name, entry)``: the entry of the type ``config["type"]`` names.

        Raises
        ------
        ConfigError
            If ``config`` is no JSON object, has no string ``"type"``, or names no
            entry; ``error.field`` is the dotted path of the field.
        """
        if not isinstance(config, Mapping):
            got = type(config).__name__
            raise ConfigError(field, f"expected a config object ({self.kind}), got {got}")
        try:
            name = get_field(config, "type", str)
        except ConfigError as e:
            raise prefixed(e, field) from e
        entry = self._entries.get(name)
        if entry is None:
            where = join_field(field, "type")
            if self._unknown is not None:
                raise self._unknown(where, name)
            raise ConfigError(where, f"unknown {self.kind} type {name!r}")
        return config, name, entry

    def __repr__(self) -> str:
        return f"TypeTable({self.kind!r}, {sorted(self._entries)})"
