"""Unit tests of ``shardedstore.io``."""
