"""The ``shardedstore`` command line (also ``python -m shardedstore``).

Subcommands: ``convert`` (shard, reshard or unshard a store), ``info`` (arrays and
their sharding), ``verify`` (check every index and chunk), ``export-v3`` (write
Zarr v3 ``zarr.json`` metadata next to the shards), ``export-refs`` (kerchunk
references to every chunk inside the shards) and ``export-icechunk`` (an Icechunk
repository of virtual references to them). Stores are named by a local
path (a ``DirectoryStore``; ``*.zip`` is a ``ZipStore``) or an fsspec URL
(``file://``, ``s3://``, ``memory://``... an ``FSStore``, with ``--storage-option``).

Exit status: 0 success, 1 ``verify`` found problems, 2 an error (one line on stderr,
``shardedstore: error: ...``; ``--debug`` shows the traceback instead; ``info`` finding
no zarr v2 array or group is one), 130 interrupted, 141 the reader of stdout went away
(``| head``; nothing is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import zarr.storage

from shardedstore.errors import ShardedStoreError
from shardedstore.tools.cli_export import add_export_parsers
from shardedstore.tools.compact import compact
from shardedstore.tools.convert import convert
from shardedstore.tools.export_v3 import export_v3
from shardedstore.tools.info import info
from shardedstore.tools.verify import verify

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_PROBLEMS",
    "PROG",
    "Mode",
    "describe_error",
    "main",
    "open_store",
]

PROG: Final = "shardedstore"
EXIT_PROBLEMS: Final = 1
EXIT_ERROR: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE, as a shell reports a process killed by it

Mode = Literal["r", "w", "a"]


def open_store(location: str, storage_options: Mapping[str, Any], mode: Mode) -> Any:
    """Open the zarr v2 store named by a local path or an fsspec URL.

    ``mode`` is ``"r"`` (must exist, read only), ``"w"`` (to be created; a zip file
    must not exist yet) or ``"a"`` (must exist, writable). ``storage_options`` go to
    fsspec for URLs and are ignored for local paths.

    Raises
    ------
    FileNotFoundError
        If a local store read or appended to does not exist.
    FileExistsError
        If a zip file to create exists already.
    """
    if "://" in location:
        return zarr.storage.FSStore(location, mode="r" if mode == "r" else "w", **storage_options)
    if location.lower().endswith(".zip"):
        if mode != "w" and not os.path.isfile(location):
            raise FileNotFoundError(f"no such zip file: {location}")
        return zarr.storage.ZipStore(location, mode={"r": "r", "w": "x", "a": "a"}[mode])
    if mode != "w" and not os.path.isdir(location):
        raise FileNotFoundError(f"no such directory: {location}")
    return zarr.storage.DirectoryStore(location)


def _storage_options(args: argparse.Namespace, *locations: str) -> dict[str, Any]:
    options = dict(args.storage_option)
    if options and not any("://" in location for location in locations):
        raise ValueError("--storage-option applies to URLs, and no store is named by one")
    return options


def _option(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # a plain string


def _chunks_per_shard(text: str) -> int | tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,..., got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"chunks per shard must be positive, got {text!r}")
    return values[0] if len(values) == 1 and "," not in text else values


def _array_override(text: str) -> tuple[str, int | tuple[int, ...]]:
    path, sep, value = text.rpartition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected PATH=N,N,..., got {text!r}")
    return path.strip("/"), _chunks_per_shard(value)


# -- subcommands ---------------------------------------------------------------------------
def _cmd_convert(args: argparse.Namespace) -> int:
    if args.unshard and (args.chunks_per_shard is not None or args.array):
        raise ValueError("--unshard takes no --chunks-per-shard or --array")
    rules: dict[str, int | tuple[int, ...]] = dict(args.array)
    if args.chunks_per_shard is not None:
        rules["*"] = args.chunks_per_shard
    options = _storage_options(args, args.src, args.dst)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    src = open_store(args.src, options, "r")
    try:
        dst = open_store(args.dst, options, "w")
        try:
            report = convert(
                src,
                dst,
                rules or None,
                unshard=args.unshard,
                progress=progress,
                resume=args.resume,
                workers=args.workers,
            )
        finally:
            _close(dst)
    finally:
        _close(src)
    print(f"{args.src} -> {args.dst}: {report.summary()}")
    return 0


def _open_to_read(args: argparse.Namespace) -> Any:
    return open_store(args.path, _storage_options(args, args.path), "r")


def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _info_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    for a in doc["arrays"]:
        shape = "x".join(map(str, a["shape"])) or "()"
        lines.append(
            f"{a['path'] or '/'}: {a['dtype']} {shape}, chunks {tuple(a['chunks'])}, "
            f"compressor {a['compressor']}"
        )
        if a["sharded"]:
            fill = a["shard_fill_ratio"]
            lines.append(
                f"  sharded: {tuple(a['chunks_per_shard'])} chunks per shard, "
                f"shard shape {tuple(a['shard_shape'])}, shard fill "
                + ("-" if fill is None else f"{fill:.1%}")
                + (", CRC32C per chunk" if a["chunk_checksums"] else "")
            )
        else:
            lines.append("  not sharded")
        lines.append(
            f"  {a['objects']} objects ({a['objects_unsharded']} unsharded), "
            f"{a['bytes_stored']} bytes"
            + (f" ({a['dead_bytes']} dead: `compact` frees them)" if a.get("dead_bytes") else "")
            + (f", {a['corrupt_shards']} CORRUPT shards" if a["corrupt_shards"] else "")
        )
    if doc.get("unfinished_convert"):
        lines.append("warning: an interrupted `shardedstore convert` is writing here: run it again")
    t = doc["totals"]
    lines.append(
        f"total: {t['arrays']} arrays, {t['groups']} groups, {t['objects']} objects "
        f"({t['objects_unsharded']} unsharded), {t['bytes_stored']} bytes"
    )
    return lines


def _nothing_found(doc: Mapping[str, Any], where: str) -> str | None:
    """Return the error for a location ``info`` found no v2 array or group at, if so."""
    if doc["arrays"] or doc["groups"]:
        return None
    if doc.get("unfinished_convert"):
        return (
            f"no array or group at {where} yet: an interrupted `shardedstore convert` is "
            "writing there; run it again"
        )
    v3 = doc.get("v3_only") or {}
    if v3.get("arrays") or v3.get("groups"):
        names = ", ".join(a or "/" for a in v3["arrays"][:5])
        more = ", ..." if len(v3["arrays"]) > 5 else ""
        return (
            f"{where} holds only Zarr v3 metadata (zarr.json): {len(v3['arrays'])} arrays "
            f"({names}{more}) and {len(v3['groups'])} groups; shardedstore describes "
            "zarr v2 stores: read it with zarr-python 3 or tensorstore"
        )
    return f"no zarr array or group at {where}"


def _cmd_info(args: argparse.Namespace) -> int:
    store = open_store(args.path, _storage_options(args, args.path), "r")
    try:
        doc = info(store, args.subpath)
    finally:
        _close(store)
    where = args.path + (f" (subpath {args.subpath!r})" if args.subpath.strip("/") else "")
    problem = _nothing_found(doc, where)
    if problem is not None:
        raise ValueError(problem)
    print(json.dumps(doc, indent=2) if args.json else "\n".join(_info_lines(doc)))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    store = open_store(args.path, _storage_options(args, args.path), "r")
    try:
        report = verify(store, args.subpath, decode=args.decode)
    finally:
        _close(store)
    for problem in report.problems:
        print(problem)
    print(f"{PROG}: {report.summary()}", file=sys.stderr)
    failed = not report.ok or (args.strict and report.warnings)
    return EXIT_PROBLEMS if failed else 0


def _cmd_compact(args: argparse.Namespace) -> int:
    store = open_store(args.path, _storage_options(args, args.path), "a")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        report = compact(store, args.subpath, array=args.array, progress=progress)
    finally:
        _close(store)
    print(f"{args.path}: {report.summary()}")
    return 0


def _cmd_export_v3(args: argparse.Namespace) -> int:
    store = open_store(args.path, _storage_options(args, args.path), "r" if args.dry_run else "a")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            keys = export_v3(
                store, args.subpath, dry_run=args.dry_run, skip_unsupported=args.skip_unsupported
            )
    finally:
        _close(store)
    for warning in caught:
        print(f"{PROG}: warning: {_one_line(str(warning.message))}", file=sys.stderr)
    for key in keys:
        print(key)
    return 0


# -- parsing -------------------------------------------------------------------------------
def _common(with_path: bool, short_storage_option: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    parent.add_argument(
        "--storage-option",
        *(["-o"] if short_storage_option else []),
        metavar="KEY=VALUE",
        type=_option,
        action="append",
        default=[],
        help="fsspec storage option for URLs (VALUE parsed as JSON if it can be); repeatable",
    )
    if with_path:
        parent.add_argument("path", metavar="PATH", help="store: local path, *.zip or URL")
        parent.add_argument(
            "--subpath", default="", help="only the group or array at this path in the store"
        )
    return parent


def _add_convert(sub: Any) -> None:
    p = sub.add_parser(
        "convert",
        parents=[_common(False)],
        help="copy a store, sharding (or --unshard-ing) its arrays",
        description="Copy SRC to DST shard by shard, in bounded memory. Re-running an "
        "interrupted conversion resumes it.",
    )
    p.add_argument("src", metavar="SRC", help="source store: local path, *.zip or URL")
    p.add_argument("dst", metavar="DST", help="destination store (empty, or an unfinished run)")
    p.add_argument(
        "--chunks-per-shard",
        "-c",
        metavar="N[,N...]",
        type=_chunks_per_shard,
        help="chunks per shard for every array with as many dimensions (N: every array)",
    )
    p.add_argument(
        "--array",
        metavar="PATH=N[,N...]",
        type=_array_override,
        action="append",
        default=[],
        help="chunks per shard for the array at PATH (wins over --chunks-per-shard); repeatable",
    )
    p.add_argument("--unshard", action="store_true", help="write plain (unsharded) chunks")
    _add_run_options(p)
    p.set_defaults(func=_cmd_convert)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an unfinished conversion into DST (default); --no-resume starts over",
    )
    p.add_argument(
        "--workers",
        "-j",
        type=int,
        default=4,
        help="shards copied concurrently (default 4; peak memory is about 2 shards each)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(sub)
    p = sub.add_parser("info", parents=[_common(True)], help="describe arrays and their shards")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser(
        "verify",
        parents=[_common(True)],
        help="check every shard index and chunk (exit status 1 if anything is wrong)",
    )
    p.add_argument("--no-decode", dest="decode", action="store_false", help="check indexes only")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser(
        "export-v3",
        parents=[_common(True)],
        help="write Zarr v3 zarr.json next to each array and group (no data copied)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and list, write nothing")
    p.add_argument("--skip-unsupported", action="store_true", help="skip arrays v3 cannot describe")
    p.set_defaults(func=_cmd_export_v3)
    p = sub.add_parser(
        "compact", parents=[_common(True)], help="rewrite shards that appends left dead bytes in"
    )
    p.add_argument("--array", metavar="A", help="only the array at this path")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar"
    )
    p.set_defaults(func=_cmd_compact)
    add_export_parsers(sub, _common, _open_to_read)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_error(err: BaseException) -> str:
    """Return a one-line message for ``err``.

    >>> describe_error(KeyError("a/.zarray"))
    "key not found: 'a/.zarray'"
    """
    if isinstance(err, KeyError) and len(err.args) == 1:
        return f"key not found: {err.args[0]!r}"
    text = _one_line(str(err))
    if isinstance(err, ShardedStoreError | OSError | ValueError | TypeError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again.

    Why: the way the Python documentation recommends for SIGPIPE (signal module, "Note
    on SIGPIPE"); a reader that stopped reading is not an error worth a traceback.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (captured, replaced)
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        status = func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:  # e.g. `shardedstore info --json | head -1`
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # every error becomes one line
        if args.debug:
            raise
        print(f"{PROG}: error: {describe_error(err)}", file=sys.stderr)
        return EXIT_ERROR
