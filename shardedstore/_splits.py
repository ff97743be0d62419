"""Compatibility: pickles of split arrays written by 0.1.0 name this module.

Splits live in :mod:`shardedstore.compose.splits`.
"""

from __future__ import annotations

from shardedstore.compose.splits import SplitSpec

__all__ = ["SplitSpec"]
