"""Medians, target ratios and the Markdown report, computed from the measured results only."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

from _runner import IMPL_BY_KEY

Entries = list[dict[str, Any]]
Summary = dict[str, dict[str, dict[str, Any]]]


def _field(entry: dict[str, Any], name: str) -> float | None:
    value = entry.get(name)
    return None if value is None else float(value)


def median_of(entries: Entries, value: Callable[[dict[str, Any]], float | None]) -> float | None:
    """Return the median of ``value`` over the successful entries (None if there are none)."""
    values = [v for e in entries if "error" not in e and (v := value(e)) is not None]
    return statistics.median(values) if values else None


def summarize_impl(phases: dict[str, Entries], nbytes: int) -> dict[str, Any]:
    """Reduce one implementation's per-repetition results to medians."""
    write, read, rand = phases.get("write", []), phases.get("read", []), phases.get("random", [])

    def mbps(e: dict[str, Any]) -> float:
        return nbytes / float(e["seconds"]) / 1e6

    ok_write = [e for e in write if "error" not in e]
    errors = [e["error"] for p in phases.values() for e in p if "error" in e]
    return {
        "write_MBps": median_of(write, mbps),
        "write_MBps_all": [round(mbps(e), 1) for e in ok_write],
        "read_MBps": median_of(read, mbps),
        "read_MBps_all": [round(mbps(e), 1) for e in read if "error" not in e],
        "random_median_us": median_of(rand, lambda e: e["median_us"]),
        "random_mean_us": median_of(rand, lambda e: e["mean_us"]),
        "random_n": median_of(rand, lambda e: e["n"]),
        "files": ok_write[0].get("files") if ok_write else None,
        "bytes": ok_write[0].get("bytes") if ok_write else None,
        "peak_write_mib": median_of(write, lambda e: e["peak_rss_mib"]),
        "peak_read_mib": median_of(read, lambda e: e["peak_rss_mib"]),
        "peak_random_mib": median_of(rand, lambda e: e["peak_rss_mib"]),
        "verified": all(e.get("verified", True) for p in phases.values() for e in p),
        "errors": errors[:1],
        "reps": len(ok_write),
    }


def summarize(main: dict[str, dict[str, dict[str, Entries]]], nbytes: int) -> Summary:
    """Return medians per compression and implementation."""
    return {
        comp: {key: summarize_impl(phases, nbytes) for key, phases in impls.items()}
        for comp, impls in main.items()
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate_targets(summary: Summary, s3: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Compute each target's measured ratio and PASS/MISS (N/A when an input is missing)."""
    none, blosc = summary.get("none", {}), summary.get("blosc", {})
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, threshold: float) -> None:
        status = "N/A" if value is None else "MISS"
        if value is not None and (value >= threshold if op == ">=" else value <= threshold):
            status = "PASS"
        targets.append(
            {"target": name, "value": value, "op": op, "threshold": threshold, "status": status}
        )

    def get(table: dict[str, dict[str, Any]], key: str, metric: str) -> float | None:
        value = table.get(key, {}).get(metric)
        return float(value) if value is not None else None

    for sharded in ("sharded", "sharded-buffered"):
        tag = "(3b)" if sharded == "sharded-buffered" else "(3)"
        for comp, table, need in (("uncompressed", none, 3.0), ("blosc", blosc, 1.5)):
            add(
                f"{tag} write vs (1), {comp}",
                _ratio(get(table, sharded, "write_MBps"), get(table, "zarr2-32", "write_MBps")),
                ">=",
                need,
            )
        for comp, table in (("uncompressed", none), ("blosc", blosc)):
            add(
                f"{tag} write vs (4) zarr3, {comp}",
                _ratio(get(table, sharded, "write_MBps"), get(table, "zarr3", "write_MBps")),
                ">=",
                1.5,
            )
    for comp, table in (("uncompressed", none), ("blosc", blosc)):
        # write time of (3) over that of the same store without the cross-process flock
        add(
            f"(3) write time vs (3c) lock=ThreadLocks(): cost of the default flock, {comp}",
            _ratio(
                get(table, "sharded-thread-locks", "write_MBps"),
                get(table, "sharded", "write_MBps"),
            ),
            "<=",
            1.05,
        )
    for comp, table, need in (("uncompressed", none, 1.5), ("blosc", blosc, 1.0)):
        add(
            f"(3) full read vs (1), {comp}",
            _ratio(get(table, "sharded", "read_MBps"), get(table, "zarr2-32", "read_MBps")),
            ">=",
            need,
        )
    for comp, table in (("uncompressed", none), ("blosc", blosc)):
        add(
            f"(3) full read vs (4) zarr3, {comp}",
            _ratio(get(table, "sharded", "read_MBps"), get(table, "zarr3", "read_MBps")),
            ">=",
            2.0,
        )
    add(
        "(3) full read vs (6) raw numpy, uncompressed (>= 0.5 = within 2x)",
        _ratio(get(none, "sharded", "read_MBps"), get(none, "raw", "read_MBps")),
        ">=",
        0.5,
    )
    for comp, table in (("uncompressed", none), ("blosc", blosc)):
        add(
            f"(3) single-chunk latency / (1), {comp} (median per read)",
            _ratio(
                get(table, "sharded", "random_median_us"),
                get(table, "zarr2-32", "random_median_us"),
            ),
            "<=",
            1.25,
        )
    if s3:
        add_s3_targets(s3, add)
    return targets


def add_s3_targets(
    s3: dict[str, Any], add: Callable[[str, float | None, str, float], None]
) -> None:
    """S3: data PUTs per shard written, and data GETs per random read beyond one per shard."""
    entries = s3["results"].get("sharded", {})
    n_shards = s3["n_shards"]
    puts = median_of(entries.get("write", []), lambda e: e["requests"].get("PUT_data", 0))
    add(
        f"S3 (3) write: data PUTs / shards ({n_shards} shards; metadata PUTs apart)",
        _ratio(puts, n_shards),
        "<=",
        1.0,
    )

    def gets_per_read(e: dict[str, Any]) -> float:
        r: dict[str, int] = e["requests"]
        return (r.get("GET_data", 0) - r.get("data_objects_got", 0)) / float(e["n"])

    add(
        "S3 (3) random read: data GETs per chunk read, after one index GET per shard",
        median_of(entries.get("random", []), gets_per_read),
        "<=",
        1.0,
    )


def fmt(value: float | None, digits: int = 0) -> str:
    """Format a number for a table cell ('—' when missing)."""
    return "—" if value is None else f"{value:,.{digits}f}"


def main_table(summary: Summary, comp: str) -> list[str]:
    """Return the Markdown table of one compression's medians."""
    rows = [
        (
            "| implementation | write MB/s | read MB/s | chunk read µs (median / mean) | reads "
            "| files | MiB on disk | peak RSS MiB w / r / rand | notes |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    table = dict(summary.get(comp, {}))
    if comp != "none" and "raw" in summary.get("none", {}):
        table["raw"] = summary["none"]["raw"]
    for key, s in table.items():
        notes = []
        if not s["verified"]:
            notes.append("**WRONG DATA**")
        if s["errors"]:
            notes.append("error: " + s["errors"][0].splitlines()[-1][:80])
        w_all = "/".join(f"{v:.0f}" for v in s["write_MBps_all"])
        r_all = "/".join(f"{v:.0f}" for v in s["read_MBps_all"])
        w_all, r_all = (f" ({v})" if v else "" for v in (w_all, r_all))
        rows.append(
            f"| {IMPL_BY_KEY[key].label} | {fmt(s['write_MBps'])}{w_all} "
            f"| {fmt(s['read_MBps'])}{r_all} | {fmt(s['random_median_us'])} / "
            f"{fmt(s['random_mean_us'])} | {fmt(s['random_n'])} | {fmt(s['files'])} "
            f"| {fmt(s['bytes'] / 2**20 if s['bytes'] else None, 1)} "
            f"| {fmt(s['peak_write_mib'])} / {fmt(s['peak_read_mib'])} / "
            f"{fmt(s['peak_random_mib'])} | {'; '.join(notes)} |"
        )
    return rows


def targets_table(targets: list[dict[str, Any]]) -> list[str]:
    """Return the Markdown table of targets."""
    rows = ["| target | measured | needed | result |", "|---|---:|---:|---|"]
    for t in targets:
        rows.append(
            f"| {t['target']} | {fmt(t['value'], 2)} | {t['op']} {t['threshold']} "
            f"| **{t['status']}** |"
        )
    return rows


def s3_table(s3: dict[str, Any]) -> list[str]:
    """Return the Markdown table of the S3 scenario (median seconds, requests of the last rep)."""
    rows = [
        (
            "| implementation | write s | write requests | read s | read requests "
            f"| {s3['n_random']} chunk reads s | chunk-read requests |"
        ),
        "|---|---:|---|---:|---|---:|---|",
    ]
    for key, phases in s3["results"].items():
        failed = [e["error"] for p in phases.values() for e in p if "error" in e]
        cells = [IMPL_BY_KEY[key].label]
        if failed:
            last = str(failed[0]).strip().splitlines()[-1][:80]
            cells[0] += f" ({len(failed)} failed runs, e.g. `{last}`)"
        for phase in ("write", "read", "random"):
            entries = phases.get(phase, [])
            ok = [e for e in entries if "error" not in e]
            cells.append(fmt(median_of(entries, lambda e: e["seconds"]), 2))
            reqs = ok[-1]["requests"] if ok else {}
            cells.append(", ".join(f"{k} {v}" for k, v in sorted(reqs.items())) or "error")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def scaling_table(
    scaling: dict[str, dict[str, dict[str, Entries]]], sizes: dict[str, int]
) -> list[str]:
    """Return the Markdown table of the scaling scenario."""
    rows = [
        (
            "| array | store | files | write MB/s | chunk read µs (median) | len(store) ms "
            "| list(keys) ms | open_group + array_keys ms | nchunks_initialized ms |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, impls in scaling.items():
        for key, phases in impls.items():
            s = summarize_impl(phases, sizes[size])
            listing = phases.get("listing", [])
            cells = [size, key, fmt(s["files"]), fmt(s["write_MBps"]), fmt(s["random_median_us"])]
            for metric in ("len_s", "keys_s", "open_group_s", "nchunks_initialized_s"):
                seconds = median_of(listing, partial(_field, name=metric))
                cells.append(fmt(None if seconds is None else seconds * 1e3, 1))
            rows.append("| " + " | ".join(cells) + " |")
    return rows
