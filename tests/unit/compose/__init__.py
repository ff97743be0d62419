"""Unit tests of ``shardedstore.compose``."""
