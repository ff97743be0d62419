"""The remote (S3 on loopback) and scaling scenarios."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import _s3
from _runner import IMPL_BY_KEY, Context, DataSet, Impl, make_spec, record, run_worker, short

S3_IMPLS: Final = ("zarr2-32", "sharded", "zarr3", "tensorstore")
SCALING_CPS: Final = (4, 8, 16)

Results = dict[str, dict[str, list[dict[str, Any]]]]


def run_s3(
    ctx: Context,
    keys: Sequence[str],
    data: DataSet,
    reps: int,
    n_random: int,
    combine: bool,
    impl_by_key: Mapping[str, Impl] = IMPL_BY_KEY,
) -> dict[str, Any]:
    """Write, read and randomly read each implementation on moto's S3 server, counting requests.

    Each phase runs in its own process (all in one with ``combine``); the worker marks phase
    boundaries with a request the counting middleware answers itself, so every phase's requests
    are counted apart, and the correctness re-reads after the random reads are left out.
    ``impl_by_key`` resolves ``keys`` (``fast_path.py`` adds the fast path to the table).
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = _s3.CountingS3Server()
    server.start()
    env = dict(ctx.env)
    env.update(
        AWS_ACCESS_KEY_ID=_s3.KEY,
        AWS_SECRET_ACCESS_KEY=_s3.KEY,
        AWS_REGION=_s3.REGION,
        AWS_DEFAULT_REGION=_s3.REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    s3ctx = replace(ctx, env=env)
    impls = [impl_by_key[k] for k in keys]
    results: Results = {impl.key: {} for impl in impls}
    phase_sets = [["write", "read", "random"]] if combine else [["write"], ["read"], ["random"]]
    try:
        for rep in range(reps):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for phases in phase_sets:
                for impl in order:
                    spec = make_spec(
                        impl,
                        data,
                        f"{impl.key}-r{rep}",
                        "blosc",
                        phases,
                        n_random=n_random,
                        random_budget_s=60.0,
                        s3=server.config(),
                    )
                    server.take()
                    result = run_worker(s3ctx, impl.worker, spec)
                    by_phase = _s3.split_phases(server.take())
                    for phase in phases:
                        requests = _s3.classify(by_phase.get(phase, []))
                        if phase in result:
                            result[phase]["requests"] = requests
                        ctx.log(
                            f"  s3 rep {rep} {impl.key:12} {phase:6} {short(result, [phase])} "
                            f"requests {requests}"
                        )
                    record(results[impl.key], result, phases)
    finally:
        server.stop()
    return {"results": results, "endpoint": "127.0.0.1 (moto ThreadedMotoServer)"}


def scaling_impl(cps: int) -> Impl:
    """Return the ShardedStore configuration with ``cps`` chunks per shard along each axis."""
    return Impl(f"sharded-{cps}", f"ShardedStore {cps}^3 chunks/shard", "v2", "sharded")


def run_scaling(
    ctx: Context,
    datasets: dict[str, DataSet],
    reps: int,
    n_random: int,
    combine: bool,
) -> dict[str, Results]:
    """Measure how write speed, single-chunk latency and listing grow with shard and array size.

    ShardedStore with 4^3, 8^3 and 16^3 chunks per shard; the unsharded zarr 2 store (32^3
    chunks) is the listing baseline, written once per array size. The array lives at ``data``
    inside a root group, so that opening and listing the group is meaningful. Uncompressed.
    Listing runs on the stores of repetition 0, once per repetition.
    """
    out: dict[str, Results] = {}
    baseline = (IMPL_BY_KEY["zarr2-32"], 8)
    for size, data in datasets.items():
        configs = [(scaling_impl(cps), cps) for cps in SCALING_CPS]
        results: Results = {impl.key: {} for impl, _ in [*configs, baseline]}
        out[size] = results
        for rep in range(reps):
            order = configs[rep % len(configs) :] + configs[: rep % len(configs)]
            if rep == 0:
                order.append(baseline)
            phase_sets = [["write", "random", "listing"]] if combine else [["write"], ["random"]]
            for phases in phase_sets:
                for impl, cps in order:
                    wanted = [p for p in phases if p != "random" or impl is not baseline[0]]
                    if wanted:
                        launch = (impl, cps, data, f"scaling-{size}-{impl.key}-r{rep}")
                        _scaling_run(ctx, results, launch, wanted, n_random, f"{size} rep {rep}")
            if not combine:
                for impl, cps in [*configs, baseline]:
                    launch = (impl, cps, data, f"scaling-{size}-{impl.key}-r0")
                    _scaling_run(ctx, results, launch, ["listing"], n_random, f"{size} rep {rep}")
    return out


def _scaling_run(
    ctx: Context,
    results: Results,
    launch: tuple[Impl, int, DataSet, str],
    phases: list[str],
    n_random: int,
    tag: str,
) -> None:
    impl, cps, data, name = launch
    spec = make_spec(
        impl,
        data,
        str(ctx.workdir / name),
        "none",
        phases,
        chunks_per_shard=cps,
        n_random=n_random,
        random_budget_s=5.0,
        array_path="data",
    )
    result = run_worker(ctx, impl.worker, spec)
    record(results[impl.key], result, phases)
    timed = [p for p in phases if p != "listing"]
    listing = result.get("listing", {})
    summary = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in listing.items() if k.endswith("_s"))
    ctx.log(f"  scaling {tag} {impl.key:10} {'+'.join(phases):22} {short(result, timed)} {summary}")
