"""Compatibility: pickles of ``ShardedStore`` written by 0.1.0 name this module.

The store lives in :mod:`shardedstore.compose.sharded_store`.
"""

from __future__ import annotations

from shardedstore.compose.sharded_store import ShardedStore, _from_config, _from_parts

__all__ = ["ShardedStore", "_from_config", "_from_parts"]
