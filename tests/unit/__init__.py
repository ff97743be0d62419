"""Unit tests, one folder per subpackage of ``shardedstore``."""
