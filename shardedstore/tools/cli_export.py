"""The ``export-refs`` and ``export-icechunk`` subcommands of :mod:`shardedstore.tools.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from shardedstore.tools.export_icechunk import export_icechunk
from shardedstore.tools.export_refs import export_refs, write_parquet_refs

__all__ = ["add_export_parsers"]

_PROG = "shardedstore"
#: opens the store named by ``args.path`` for reading (the command line's ``open_store``)
_Opener = Callable[[argparse.Namespace], Any]


def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _cmd_export_refs(args: argparse.Namespace, opener: _Opener) -> int:
    if (args.output is None) == (args.parquet is None):
        raise ValueError("give one of -o/--output FILE ('-': stdout) and --parquet DIR")
    store = opener(args)
    try:
        refs = export_refs(store, args.subpath)
    finally:
        _close(store)
    if args.parquet is not None:
        write_parquet_refs(refs, args.parquet)
    elif args.output == "-":
        json.dump(refs, sys.stdout)
        sys.stdout.write("\n")
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(refs, f)
    chunks = sum(1 for v in refs["refs"].values() if isinstance(v, list))
    print(f"{_PROG}: {len(refs['refs'])} references, {chunks} chunks", file=sys.stderr)
    return 0


def _cmd_export_icechunk(args: argparse.Namespace, opener: _Opener) -> int:
    store = opener(args)
    try:
        result = export_icechunk(store, args.repo, args.subpath, python=args.python)
    finally:
        _close(store)
    print(f"{args.repo}: snapshot {result['snapshot']}, {result['chunks']} virtual chunks")
    return 0


def add_export_parsers(
    sub: Any, common: Callable[..., argparse.ArgumentParser], opener: _Opener
) -> None:
    """Add the export subcommands to ``sub``; ``common`` builds the shared options."""
    p = sub.add_parser(
        "export-refs",
        parents=[common(True, short_storage_option=False)],
        help="write kerchunk references to every chunk inside the shards (no data copied)",
        description="Map every logical chunk key to [shard url, offset, length] (kerchunk "
        "reference format version 1), with the presented metadata inline, for zarr + "
        "fsspec's reference:// file system. Here -o is the output file, not a storage option.",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="JSON references ('-': stdout)")
    p.add_argument("--parquet", metavar="DIR", help="write Parquet references to DIR instead")
    p.set_defaults(func=partial(_cmd_export_refs, opener=opener))
    p = sub.add_parser(
        "export-icechunk",
        parents=[common(True)],
        help="create an Icechunk repository of virtual references into the shards",
        description="Create an Icechunk repository (a new local directory) whose chunks are "
        "virtual references into the shards, each checked against the shard's ETag, so a "
        "shard rewritten later is refused instead of misread. No chunk byte is copied.",
    )
    p.add_argument("repo", metavar="REPO", help="the repository to create (a new directory)")
    p.add_argument(
        "--python",
        metavar="PY",
        help="python of an environment with icechunk and zarr>=3 (default: "
        "$SHARDEDSTORE_ICECHUNK_PYTHON, else this one)",
    )
    p.set_defaults(func=partial(_cmd_export_icechunk, opener=opener))
