"""Unit tests of ``shardedstore.config``."""
