"""xarray's ``engine="shardedstore"``: ``open_zarr``'s dataset, variables read by the fast path.

Everything but the reads is xarray's own zarr backend -- groups, consolidated metadata,
dimensions, attributes, encodings, CF decoding -- so the dataset is the one
``xr.open_zarr`` gives; each variable's lazy array is a :class:`~.core.FastArray`
over the same ``zarr.Array`` (dask chunks, when asked for, pickle to workers).

Use it by name (the entry point is installed with the package)::

    ds = xr.open_dataset("data.zarr", engine="shardedstore", chunks={})
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

from xarray.backends.zarr import ZarrArrayWrapper, ZarrBackendEntrypoint, ZarrStore
from xarray.core import indexing
from xarray.core.dataset import Dataset

from shardedstore.array.core import FastArray, source_store

__all__ = ["FastArrayWrapper", "ShardedBackendEntrypoint", "ShardedZarrStore"]


class FastArrayWrapper(ZarrArrayWrapper):
    """xarray's zarr array wrapper, basic indexing served by a :class:`FastArray`."""

    __slots__ = ("_fast",)

    def __init__(self, zarr_array: Any, fast: FastArray) -> None:
        super().__init__(zarr_array)  # type: ignore[no-untyped-call]
        self._fast = fast

    def _getitem(self, key: Any) -> Any:
        return self._fast[key]


class ShardedZarrStore(ZarrStore):
    """xarray's ``ZarrStore`` whose variables read through the fast path."""

    threads: int | None = None

    def open_store_variable(self, name: str) -> Any:
        variable = super().open_store_variable(name)  # type: ignore[no-untyped-call]
        zarr_array = self.members[name]
        if zarr_array.ndim == 0 or zarr_array.dtype == object:
            return variable  # zarr's own path serves these anyway
        fast = FastArray.from_zarr(zarr_array, threads=self.threads)
        wrapper = FastArrayWrapper(zarr_array, fast)
        variable._data = indexing.LazilyIndexedArray(wrapper)
        return variable


class ShardedBackendEntrypoint(ZarrBackendEntrypoint):
    """``xr.open_dataset(path_or_store, engine="shardedstore")``.

    Takes ``xr.open_zarr``'s arguments, plus ``threads``. A path or URL is opened as a
    :class:`~shardedstore.ShardedStore`, so sharded arrays read without configuration.
    """

    description = "Open zarr v2 stores (sharded or not) with shardedstore's fast path"
    url = "https://github.com/thewtex/shardedstore"
    supports_groups = False

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return False  # only when asked for by name

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: bool = True,
        decode_times: Any = True,
        concat_characters: bool = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        mode: Literal["w", "w-", "a", "a-", "r+", "r"] = "r",
        synchronizer: Any = None,
        consolidated: bool | None = None,
        chunk_store: Any = None,
        storage_options: Any = None,
        zarr_version: Any = None,
        zarr_format: Any = None,
        store: Any = None,
        engine: Any = None,
        use_zarr_fill_value_as_mask: Any = None,
        cache_members: bool = True,
        threads: int | None = None,
    ) -> Dataset:
        if store is None:
            target = filename_or_obj
            if isinstance(target, str | os.PathLike):
                target = source_store(target)
            store = ShardedZarrStore.open_group(
                target,
                group=group,
                mode=mode,
                synchronizer=synchronizer,
                consolidated=consolidated,
                consolidate_on_close=False,
                chunk_store=chunk_store,
                storage_options=storage_options,
                zarr_version=zarr_version,
                use_zarr_fill_value_as_mask=None,
                zarr_format=zarr_format,
                cache_members=cache_members,
            )
            store.threads = threads
        return super().open_dataset(
            filename_or_obj,
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            drop_variables=drop_variables,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
            group=group,
            mode=mode,
            store=store,
        )
