"""Benchmark shardedstore against zarr 2, zarr-python 3, tensorstore and raw numpy.

Usage: ``python benchmarks/run.py [--quick] [--out benchmarks/RESULTS.md]``. Writes RESULTS.md,
results.json and results.png (beside ``--out``; into it when ``--out`` is a directory) and
prints PASS/MISS per target. See RESULTS.md's "Method" section for what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _output
import _report
import _runner
import _scenarios

HERE = Path(__file__).resolve().parent
FULL_SHAPE = (512, 512, 256)
QUICK_SHAPE = (128, 128, 64)
S3_SHAPE = (512, 512, 64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (< 60 s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "RESULTS.md",
        help="RESULTS.md path, or a directory for all three outputs",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions (>= 3 advised)")
    parser.add_argument(
        "--impls",
        default=",".join(i.key for i in _runner.IMPLS),
        help="comma-separated implementation keys",
    )
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 scenario")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling scenario")
    parser.add_argument("--no-x8", action="store_true", help="scaling: skip the 1 GiB array")
    parser.add_argument("--workdir", type=Path, default=HERE / "_work", help="scratch space")
    parser.add_argument("--keep", action="store_true", help="keep the stores after the run")
    return parser.parse_args(argv)


def output_paths(out: Path) -> tuple[Path, Path, Path]:
    """Return the Markdown, JSON and PNG paths for ``--out``."""
    if out.suffix.lower() != ".md":
        out.mkdir(parents=True, exist_ok=True)
        out = out / "RESULTS.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, out.parent / "results.json", out.parent / "results.png"


def resolve_pythons(kinds: list[str], notes: list[str]) -> dict[str, Path]:
    """Return the zarr3/tensorstore venv interpreters, preferring ``tests/support/venvs.py``."""
    sys.path.insert(0, str(HERE.parent))
    try:
        from tests.support.venvs import v3_python
    except ImportError:
        from _venvs import v3_python
    pythons: dict[str, Path] = {}
    for kind in kinds:
        try:
            pythons[kind] = Path(v3_python(kind))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any failure to build means: skip, with a note
            notes.append(f"{kind} skipped: its virtualenv is unavailable ({exc!s:.200})")
    return pythons


def check_shardedstore(notes: list[str]) -> tuple[bool, bool]:
    """Return whether shardedstore imports (in a subprocess) and has ``buffered()``."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from shardedstore import ShardedStore;"
        "print(hasattr(ShardedStore, 'buffered'))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(HERE.parent)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        notes.append(f"shardedstore does not import ({last}): implementations (3)/(3b) skipped")
        return False, False
    buffered = proc.stdout.strip() == "True"
    if not buffered:
        notes.append("ShardedStore has no buffered(): (3b) skipped")
    return True, buffered


def select_impls(args: argparse.Namespace, notes: list[str]) -> tuple[list[_runner.Impl], Any]:
    keys = [k for k in args.impls.split(",") if k]
    ok, buffered = check_shardedstore(notes)
    if not ok:
        keys = [k for k in keys if not k.startswith("sharded")]
    elif not buffered:
        keys = [k for k in keys if k != "sharded-buffered"]
    kinds = [k for k in ("zarr3", "tensorstore") if k in keys]
    pythons = resolve_pythons(kinds, notes)
    keys = [k for k in keys if k not in ("zarr3", "tensorstore") or k in pythons]
    return [_runner.IMPL_BY_KEY[k] for k in keys], pythons


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the reports; return 0 (targets are reported, not enforced)."""
    start = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    args = parse_args(argv)
    notes: list[str] = []
    impls, pythons = select_impls(args, notes)
    for note in notes:
        print("NOTE:", note)
    workdir = args.workdir / f"run-{int(time.time())}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = _runner.Context(workdir=workdir, pythons=pythons)
    try:
        results = measure(args, ctx, impls)
        results["notes"] = notes
        results["config"]["loadavg_start"] = load_start
        results["runtime_s"] = time.perf_counter() - start
        results["environment"] = _output.environment(pythons)
        write_outputs(results, args.out)
    finally:
        if not args.keep:
            print(f"deleting {workdir} ...")
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def measure(
    args: argparse.Namespace, ctx: _runner.Context, impls: list[_runner.Impl]
) -> dict[str, Any]:
    """Run the local comparison, then the S3 and scaling scenarios; return raw results."""
    quick, reps = args.quick, max(1, args.reps)
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    data = _runner.prepare_data(args.workdir / "data", shape)
    n_random = 100 if quick else 2000
    results: dict[str, Any] = {}
    results["config"] = {
        "quick": quick,
        "shape": shape,
        "nbytes": data.nbytes,
        "reps": reps,
        "n_random": n_random,
        "impls": [i.key for i in impls],
    }
    print(f"main comparison: {shape}, {reps} reps, impls {[i.key for i in impls]}")
    main_results = _runner.run_main_comparison(
        ctx, impls, data, ["none", "blosc"], reps, quick, n_random, 0.2 if quick else 5.0
    )
    results["main"] = main_results
    results["summary"] = _report.summarize(main_results, data.nbytes)
    keys = [i.key for i in impls]
    if not args.no_s3:
        results["s3"] = run_s3(ctx, keys, quick, reps, args.workdir)
    if not args.no_scaling and "sharded" in keys:
        sizes = {"x1": shape}
        if not (quick or args.no_x8):
            sizes["x8"] = (2 * shape[0], 2 * shape[1], 2 * shape[2])
        datasets = {k: _runner.prepare_data(args.workdir / "data", s) for k, s in sizes.items()}
        print(f"scaling: {sizes}")
        results["scaling"] = _scenarios.run_scaling(
            ctx, datasets, 1 if quick else reps, 50 if quick else 500, quick
        )
        results["scaling_nbytes"] = {k: d.nbytes for k, d in datasets.items()}
    results["targets"] = _report.evaluate_targets(results["summary"], results.get("s3"))
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write RESULTS.md, results.json and results.png, and print the targets."""
    md_path, json_path, png_path = output_paths(out)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    md_path.write_text(_output.render_markdown(results))
    _output.plot(results["summary"], png_path)
    for t in results["targets"]:
        print(
            f"{t['status']:4}  {t['target']}: {_report.fmt(t['value'], 2)} "
            f"(needs {t['op']} {t['threshold']})"
        )
    print(f"wrote {md_path}, {json_path}, {png_path} ({results['runtime_s']:.0f} s)")


def run_s3(
    ctx: _runner.Context,
    keys: list[str],
    quick: bool,
    reps: int,
    datadir: Path,
    s3_impls: Sequence[str] = _scenarios.S3_IMPLS,
    impl_by_key: Mapping[str, _runner.Impl] = _runner.IMPL_BY_KEY,
) -> dict[str, Any]:
    """Run the S3 scenario on the implementations of ``s3_impls`` among ``keys``."""
    s3_keys = [k for k in s3_impls if k in keys]
    shape = QUICK_SHAPE if quick else S3_SHAPE
    data = _runner.prepare_data(datadir / "data", shape)
    n_random = 20 if quick else 200
    s3_reps = 1 if quick else reps
    print(f"s3: {shape}, {s3_reps} reps, impls {s3_keys}")
    out = _scenarios.run_s3(ctx, s3_keys, data, s3_reps, n_random, quick, impl_by_key)
    n_shards = 1
    for s in shape:
        n_shards *= -(-s // 256)
    out.update(shape=shape, n_shards=n_shards, n_random=n_random, reps=s3_reps)
    return out


if __name__ == "__main__":
    sys.exit(main())
