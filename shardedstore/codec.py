"""Compatibility: ``import shardedstore.codec`` registers the ``sharding_indexed`` codec.

The codec lives in :mod:`shardedstore.format.codec`; pickles and imports name this path.
"""

from __future__ import annotations

from shardedstore.format.codec import CODEC_KEY, ShardingCodec

__all__ = ["CODEC_KEY", "ShardingCodec"]
