"""Pure shard format: keys, Morton order, shard bytes, array layout, metadata, the codec.

Nothing here does I/O or knows a store.
"""
