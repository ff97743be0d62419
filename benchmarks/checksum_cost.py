"""Measure what chunk checksums cost: ShardedStore with ``chunk_checksums`` on vs off.

Usage: ``python benchmarks/checksum_cost.py [--reps 7] [--quick]``. Runs the main benchmark's
workload and phases (write, full read, random chunk reads; each in a fresh subprocess of
``_worker_v2.py``, prewarmed the same way) for the ``sharded`` implementation twice per
repetition, checksums on and off, alternating which goes first, and prints the medians and
the on/off ratios per compression, of wall time and of the process's CPU time (less
disturbed by other work on a shared machine). Medians over many repetitions.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _runner

HERE = Path(__file__).resolve().parent
PHASES = ("write", "read", "random")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions per variant")
    parser.add_argument("--quick", action="store_true", help="small array (smoke run)")
    parser.add_argument("--workdir", type=Path, default=HERE / "_work" / "checksums")
    return parser.parse_args(argv)


def measure(result: dict[str, Any], phase: str) -> dict[str, float]:
    """Return the phase's wall and CPU time (seconds; per read in microseconds for random)."""
    entry = result[phase]
    if entry.get("verified") is False:
        raise RuntimeError(f"{phase} read back wrong data")
    if phase == "random":
        return {"wall": entry["median_us"], "cpu": 1e6 * entry["cpu_seconds"] / entry["n"]}
    return {"wall": entry["seconds"], "cpu": entry["cpu_seconds"]}


Times = dict[str, dict[bool, dict[str, list[dict[str, float]]]]]


def run(args: argparse.Namespace) -> Times:
    shape = (128, 128, 64) if args.quick else (512, 512, 256)
    ctx = _runner.Context(workdir=args.workdir, pythons={})
    data = _runner.prepare_data(args.workdir / "data", shape)
    impl = _runner.IMPL_BY_KEY["sharded"]
    times: Times = {}
    for compression in ("none", "blosc"):
        per = times.setdefault(compression, {True: {}, False: {}})
        for rep in range(args.reps):
            order = (True, False) if rep % 2 == 0 else (False, True)
            for phase in PHASES:
                for on in order:
                    path = str(args.workdir / f"{compression}-{'on' if on else 'off'}-r{rep}")
                    spec = _runner.make_spec(
                        impl, data, path, compression, [phase], chunk_checksums=on
                    )
                    result = _runner.run_worker(ctx, "v2", spec)
                    if "error" in result:
                        raise RuntimeError(result["error"])
                    per[on].setdefault(phase, []).append(measure(result, phase))
            line = ", ".join(
                f"{p} on {per[True][p][-1]['wall']:.4g} off {per[False][p][-1]['wall']:.4g}"
                for p in PHASES
            )
            print(f"{compression} rep {rep} (wall): {line}", flush=True)
    return times


def report(times: Times) -> None:
    """Print the medians (wall and CPU) and the on / off ratios as a Markdown table."""
    print(
        "\n| compression | phase | wall on | wall off | wall on/off | CPU on | CPU off | CPU on/off |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for compression, per in times.items():
        for phase in PHASES:
            unit = "us/read" if phase == "random" else "s"
            cells = []
            for clock in ("wall", "cpu"):
                on = statistics.median(m[clock] for m in per[True][phase])
                off = statistics.median(m[clock] for m in per[False][phase])
                cells += [f"{on:.4g} {unit}", f"{off:.4g} {unit}", f"{on / off:.3f}"]
            print(f"| {compression} | {phase} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report(run(args))
    finally:
        for path in args.workdir.glob("*-r*"):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
