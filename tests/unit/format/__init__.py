"""Unit tests of ``shardedstore.format``."""
