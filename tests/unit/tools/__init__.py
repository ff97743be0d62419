"""Unit tests of ``shardedstore.tools``."""
