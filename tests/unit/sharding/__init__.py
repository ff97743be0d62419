"""Unit tests of ``shardedstore.sharding``."""
