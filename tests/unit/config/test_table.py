"""``TypeTable``: the one registry helper behind store types, split factories and locks."""

from __future__ import annotations

import pytest

from shardedstore.config.table import TypeTable
from shardedstore.errors import ConfigError, DuplicateStoreTypeError, UnknownStoreTypeError


def test_entries_are_read_only_and_found_by_type() -> None:
    table: TypeTable[int] = TypeTable("number")
    table.add("one", 1)
    assert table.entry_for({"type": "one", "x": 2}, "a.b") == ({"type": "one", "x": 2}, "one", 1)
    with pytest.raises(TypeError):
        table.entries["two"] = 2  # type: ignore[index]
    assert table.remove("one") == 1
    assert dict(table.entries) == {}


def test_a_name_is_registered_once() -> None:
    table: TypeTable[int] = TypeTable("number")
    table.add("one", 1)
    with pytest.raises(DuplicateStoreTypeError, match="one"):
        table.add("one", 2)


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (["not", "an", "object"], "a", "expected a config object"),
        ({}, "a.type", "type"),
        ({"type": 3}, "a.type", "type"),
        ({"type": "two"}, "a.type", "unknown number type 'two'"),
    ],
)
def test_malformed_configs_name_the_field(config: object, field: str, message: str) -> None:
    table: TypeTable[int] = TypeTable("number")
    table.add("one", 1)
    with pytest.raises(ConfigError, match=message) as info:
        table.entry_for(config, "a")
    assert info.value.field == field


def test_the_error_for_an_unknown_name_can_be_chosen() -> None:
    table: TypeTable[int] = TypeTable("store", UnknownStoreTypeError)
    with pytest.raises(UnknownStoreTypeError) as info:
        table.entry_for({"type": "tape"}, "base")
    assert (info.value.field, info.value.type_name) == ("base.type", "tape")


def test_the_three_tables_use_it() -> None:
    from shardedstore import locks
    from shardedstore.compose import factories
    from shardedstore.config import registry

    assert isinstance(registry._STORE_TYPES, TypeTable)
    assert isinstance(factories._FACTORY_TYPES, TypeTable)
    assert isinstance(locks._LOCK_TYPES, TypeTable)
    assert set(locks._LOCK_TYPES.entries) == {"default", "thread", "file", "dask"}
