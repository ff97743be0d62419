"""Composition (thewtex/shardedstore model): mounts, array splits and ``ShardedStore``."""
