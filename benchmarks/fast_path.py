"""Benchmark the fast path (``shardedstore.open_array``) against zarr 2, zarr-python 3, tensorstore.

Usage: ``python benchmarks/fast_path.py [--quick] [--reps N] [--threads N] [--no-s3] [--no-local]
[--out FILE.md]``.
Same workload and workers as ``run.py`` (512 x 512 x 256 uint16, 32^3 chunks, 8^3 chunks per
shard; uncompressed and Blosc lz4), each phase in a fresh process, implementations alternated
within each repetition: full write, full read, a 1/8 region read (a random shard-aligned
256 x 256 x 128 block), single-chunk reads, and xarray ``open_dataset(engine=...).load()``
against ``open_zarr(...).load()`` on the same store. Prints and writes a Markdown table of
medians with the fast path's ratio to each other implementation (> 1: the fast path is faster),
CPU seconds (all threads) and each phase's peak RSS. The xarray rows' writes (in parentheses)
only set up their store, through the fast path.

Then the S3 scenario of ``run.py`` (``_scenarios.run_s3``: a moto server on loopback, requests
counted per phase) for zarr 2 with 32^3 chunks, ``ShardedStore``, the fast path and tensorstore
(those of ``--impls``): write, full read and single-chunk reads, with their requests and the
ratio of each implementation's time to the fast path's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _runner
from _runner import Impl

HERE = Path(__file__).resolve().parent
FULL_SHAPE = (512, 512, 256)
QUICK_SHAPE = (128, 128, 64)

FAST = Impl("fast", "(F) open_array over ShardedStore, 32^3 chunks in 8^3 shards", "v2", "fast")
#: the fast path without fsync: what zarr 2 and zarr-python 3 promise of a write that
#: returned (tensorstore's file driver fsyncs, as (F) does)
FAST_NOSYNC = Impl(
    "fast-nosync", "(F2) open_array, durable=False (no fsync, like (1)-(4))", "v2", "fast-nosync"
)
XARRAY = (
    Impl("xarray-zarr", "(X1) xr.open_zarr(ShardedStore).load()", "v2", "xarray-zarr"),
    Impl("xarray-fast", "(X2) xr.open_dataset(engine=shardedstore).load()", "v2", "xarray-fast"),
)
BASELINES = ("zarr2-32", "zarr2-256", "sharded", "zarr3", "tensorstore")
IMPL_TABLE = {
    **_runner.IMPL_BY_KEY,
    FAST.key: FAST,
    FAST_NOSYNC.key: FAST_NOSYNC,
    **{x.key: x for x in XARRAY},
}
#: the implementations of the S3 scenario, in this order
S3_IMPLS = ("zarr2-32", "sharded", FAST.key, "tensorstore")
#: the phases of each run: name -> (worker phase, extra spec fields)
PHASES = ("write", "read", "region", "chunk")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="fast path threads")
    parser.add_argument(
        "--impls",
        default=",".join([*BASELINES, FAST.key, FAST_NOSYNC.key, *(x.key for x in XARRAY)]),
    )
    parser.add_argument(
        "--s3",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"run the S3 scenario ({', '.join(S3_IMPLS)} among --impls)",
    )
    parser.add_argument(
        "--local",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the local-directory comparison",
    )
    parser.add_argument("--out", type=Path, default=HERE / "FAST_PATH.md")
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    return parser.parse_args(argv)


def impls_for(keys: list[str], notes: list[str]) -> tuple[list[Impl], dict[str, Path]]:
    import run

    kinds = [k for k in ("zarr3", "tensorstore") if k in keys]
    pythons = run.resolve_pythons(kinds, notes)
    keys = [k for k in keys if k not in ("zarr3", "tensorstore") or k in pythons]
    return [IMPL_TABLE[k] for k in keys], pythons


def spec_for(
    impl: Impl, data: _runner.DataSet, path: str, comp: str, phase: str, threads: int | None
) -> dict[str, Any]:
    """Return the worker spec of one phase; ``region`` and ``chunk`` are ``random`` reads."""
    extra: dict[str, Any] = {"threads": threads}
    if impl.key.startswith("xarray"):
        extra["array_path"] = "v"
    spec = _runner.make_spec(impl, data, path, comp, [phase], **extra)
    if phase == "region":
        spec.update(phases=["random"], n_random=8, random_budget_s=10.0)
        spec["read_chunks"] = [s // 2 for s in data.shape]
    elif phase == "chunk":
        spec.update(phases=["random"], n_random=2000, random_budget_s=2.0)
    return spec


def applies(impl: Impl, phase: str) -> bool:
    if impl.key.startswith("xarray"):
        return phase in ("write", "read")  # its write only creates the store
    return True


def run_all(
    ctx: _runner.Context, impls: list[Impl], data: _runner.DataSet, reps: int, threads: int | None
) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    out: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for rep in range(reps):
        order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
        for comp in ("none", "blosc"):
            for impl in order:
                path = str(ctx.workdir / f"fast-{comp}-{impl.key}-r{rep}")
                for phase in PHASES:
                    if not applies(impl, phase):
                        continue
                    spec = spec_for(impl, data, path, comp, phase, threads)
                    result = _runner.run_worker(ctx, impl.worker, spec)
                    entry = result.get(spec["phases"][0], {}) if "error" not in result else result
                    out.setdefault(comp, {}).setdefault(impl.key, {}).setdefault(phase, []).append(
                        entry
                    )
                    ctx.log(f"  {comp:5} rep {rep} {impl.key:12} {phase:6} {brief(entry)}")
                shutil.rmtree(path, ignore_errors=True)
    return out


def brief(entry: dict[str, Any]) -> str:
    if "error" in entry:
        return "ERROR " + str(entry["error"]).splitlines()[-1][:100]
    if "median_us" in entry:
        return f"{entry['median_us']:.0f} us x{entry['n']} (peak {entry['peak_rss_mib']:.0f} MiB)"
    ok = "" if entry.get("verified", True) else " WRONG DATA"
    return f"{entry['seconds']:.3f} s (peak {entry['peak_rss_mib']:.0f} MiB){ok}"


def medians(entries: list[dict[str, Any]], nbytes: int, phase: str) -> tuple[Any, Any, bool]:
    """Return (MB/s or us per read, peak RSS MiB, all verified) over the good entries."""
    good = [e for e in entries if "error" not in e]
    if not good:
        return None, None, False
    ok = all(e.get("verified", True) for e in good)
    peak = statistics.median(e["peak_rss_mib"] for e in good)
    if phase == "chunk":
        return statistics.median(e["median_us"] for e in good), peak, ok
    if phase == "region":
        seconds = statistics.median(e["median_us"] for e in good) / 1e6
        return nbytes / 8 / seconds / 1e6, peak, ok
    return statistics.median(nbytes / e["seconds"] / 1e6 for e in good), peak, ok


def table(results: dict[str, Any], nbytes: int, impls: list[Impl]) -> str:
    lines = []
    for comp, per_impl in results.items():
        lines.append(f"\n### {'uncompressed' if comp == 'none' else 'Blosc lz4'}\n")
        lines.append(
            "| implementation | write MB/s | read MB/s | 1/8 region MB/s | chunk read us | "
            "CPU s (w/r) | peak RSS MiB (w/r/region) | fast / this (w, r, region) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        fast = {p: medians(per_impl.get("fast", {}).get(p, []), nbytes, p)[0] for p in PHASES}
        for impl in impls:
            phases = per_impl.get(impl.key, {})
            vals = {p: medians(phases.get(p, []), nbytes, p) for p in PHASES}
            ratios = []
            for p in ("write", "read", "region"):
                mine, theirs = fast[p], vals[p][0]
                if impl.key.startswith("xarray"):
                    mine = medians(per_impl.get("xarray-fast", {}).get(p, []), nbytes, p)[0]
                    if p == "write":  # both write through the fast path: no comparison
                        mine = None
                ratios.append(f"{mine / theirs:.2f}" if mine and theirs and p in phases else "-")
            cells = [fmt(vals[p][0]) for p in PHASES]
            if impl.key.startswith("xarray"):
                cells[0] = f"({cells[0]})"  # setup only: the store is written by the fast path
            cells.append("/".join(cpu(phases.get(p, [])) for p in ("write", "read")))
            peaks = "/".join(fmt(vals[p][1]) for p in ("write", "read", "region"))
            bad = "" if all(v[2] or v[0] is None for v in vals.values()) else " WRONG DATA"
            lines.append(
                f"| {impl.label}{bad} | {' | '.join(cells)} | {peaks} | {', '.join(ratios)} |"
            )
        lines.append(nosync_line(per_impl, nbytes))
    return "\n".join(lines)


def nosync_line(per_impl: dict[str, Any], nbytes: int) -> str:
    """Return the sentence saying which writes fsync, with (F2)'s write speed over (F)'s."""
    mine = medians(per_impl.get(FAST_NOSYNC.key, {}).get("write", []), nbytes, "write")[0]
    synced = medians(per_impl.get(FAST.key, {}).get("write", []), nbytes, "write")[0]
    if not mine or not synced:
        return ""
    return (
        "\n(F) and (5) both fsync each shard file before renaming it into place and its folder "
        "after (tensorstore's file driver does by default); (1)-(4) do not sync, nor does (F2): "
        f"(F2) / (F) write = {mine / synced:.2f}."
    )


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def cpu(entries: list[dict[str, Any]]) -> str:
    """Return the median CPU seconds of a phase (all threads of the worker process)."""
    good = [e["cpu_seconds"] for e in entries if "error" not in e and "cpu_seconds" in e]
    return f"{statistics.median(good):.2f}" if good else "-"


def run_s3(
    ctx: _runner.Context, impls: list[Impl], args: argparse.Namespace
) -> dict[str, Any] | None:
    """Run ``run.py``'s S3 scenario on the implementations of :data:`S3_IMPLS` among ``impls``."""
    import run

    keys = [i.key for i in impls]
    if not any(k in keys for k in S3_IMPLS):
        return None
    start = time.perf_counter()
    reps = max(1, args.reps)
    out = run.run_s3(ctx, keys, args.quick, reps, args.workdir, S3_IMPLS, IMPL_TABLE)
    out["seconds"] = time.perf_counter() - start
    return out


def s3_section(s3: dict[str, Any]) -> str:
    """Return the Markdown of the S3 scenario: times, requests, ratios to the fast path."""
    n_random = s3["n_random"]
    lines = [
        "\n## S3 API (moto server on 127.0.0.1)\n",
        (
            f"Array {' x '.join(map(str, s3['shape']))} uint16, Blosc lz4, 32^3 chunks, 8^3 "
            f"chunks per shard ({s3['n_shards']} shards); {s3['reps']} reps, medians, "
            f"{s3['seconds']:.0f} s; each phase in a fresh process, every base store an FSStore "
            "on the bucket (the labels name the local runs' stores), the fast path on its default "
            "threads (`--threads` is for the local runs). Requests (of the last rep) are counted by a WSGI middleware around moto's "
            "app and include creating or opening the array (untimed); the random reads' "
            "correctness re-reads are left out. **Compare requests first**: moto serves a ranged "
            "GET by copying the whole object and slicing it, in one Python process, so a "
            "one-chunk GET costs about what a whole-shard GET costs and times measure moto as "
            "much as the client. Last column: this implementation's time / the fast path's "
            "(> 1: the fast path is faster)."
        ),
        "",
        (
            "| implementation | write s | write requests | read s | read requests "
            f"| chunk read ms (median of {n_random}) | chunk-read requests "
            "| this / fast (w, r, chunk) |"
        ),
        "|---|---:|---|---:|---|---:|---|---|",
    ]
    results = s3["results"]
    fast = s3_times(results.get(FAST.key, {}))
    for key, phases in results.items():
        times = s3_times(phases)
        cells = [s3_label(key, phases)]
        for phase in ("write", "read", "random"):
            ok = [e for e in phases.get(phase, []) if "error" not in e]
            cells.append("-" if times[phase] is None else f"{times[phase]:.2f}")
            cells.append(requests_cell(ok[-1].get("requests", {}) if ok else {}))
        ratios = [
            f"{theirs / mine:.2f}" if mine and theirs else "-"
            for mine, theirs in ((fast[p], times[p]) for p in ("write", "read", "random"))
        ]
        cells.append(", ".join(ratios))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def s3_times(phases: dict[str, list[dict[str, Any]]]) -> dict[str, float | None]:
    """Return median write and read seconds and the median single-chunk read in ms."""
    out: dict[str, float | None] = {}
    for phase in ("write", "read", "random"):
        field, scale = ("median_us", 1e-3) if phase == "random" else ("seconds", 1.0)
        good = [e[field] * scale for e in phases.get(phase, []) if "error" not in e]
        out[phase] = statistics.median(good) if good else None
    return out


def s3_label(key: str, phases: dict[str, list[dict[str, Any]]]) -> str:
    """Return an implementation's label, flagging failed runs and wrong data."""
    entries = [e for p in phases.values() for e in p]
    label = IMPL_TABLE[key].label
    failed = [str(e["error"]).strip().splitlines()[-1][:80] for e in entries if "error" in e]
    if failed:
        label += f" ({len(failed)} failed runs, e.g. `{failed[0]}`)"
    if any(e.get("verified") is False for e in entries):
        label += " WRONG DATA"
    return label


def requests_cell(reqs: dict[str, int]) -> str:
    """Return a request count summary: data PUTs, data GETs (ranged, objects), the rest."""
    if not reqs:
        return "-"
    parts = [f"{reqs.get('total', 0)}:"]
    if reqs.get("PUT_data"):
        parts.append(f"{reqs['PUT_data']} data PUT,")
    if reqs.get("GET_data"):
        parts.append(
            f"{reqs['GET_data']} data GET ({reqs.get('GET_data_ranged', 0)} ranged, "
            f"{reqs.get('data_objects_got', 0)} objects),"
        )
    meta = reqs.get("PUT_meta", 0) + reqs.get("GET_meta", 0)
    if meta:
        parts.append(f"{meta} metadata,")
    parts += [f"{reqs[k]} {k}," for k in ("HEAD", "LIST", "DELETE", "POST", "other") if reqs.get(k)]
    return " ".join(parts).rstrip(",")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    impls, pythons = impls_for([k for k in args.impls.split(",") if k], notes)
    for note in notes:
        print("NOTE:", note)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    workdir = args.workdir / f"fast-{int(time.time())}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = _runner.Context(workdir=workdir, pythons=pythons)
    load = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, Any] = {}
    s3 = None
    try:
        data = _runner.prepare_data(args.workdir / "data", shape)
        start = time.perf_counter()
        if args.local:
            results = run_all(ctx, impls, data, max(1, args.reps), args.threads)
        if args.s3:
            s3 = run_s3(ctx, impls, args)
        elapsed = time.perf_counter() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    local = f"shape {shape} uint16" if args.local else "local comparison skipped (--no-local)"
    text = (
        f"# Fast path benchmark\n\n{local}, 32^3 chunks, 8^3 chunks per shard; "
        f"{args.reps} reps (medians); fast path threads: {args.threads or os.cpu_count()}; "
        f"load average at start {load}, at end {[round(x, 2) for x in os.getloadavg()]}; "
        f"{elapsed:.0f} s.\n" + table(results, data.nbytes, impls) + "\n"
    )
    if s3 is not None:
        text += s3_section(s3)
    if notes:
        text += "\nNotes: " + "; ".join(notes) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
