"""The quickstart dataset on a service, and the request counts reported for it (S3, HTTP)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from tests.support.services import Request

ROOT = Path(__file__).resolve().parents[2]
COUNTS_ENV = "SHARDEDSTORE_REQUEST_COUNTS"
#: the quickstart dataset, reduced: 30 days instead of 365, shards of 10 days x 2 x 4 tiles
QUICKSTART_DAYS = 30
QUICKSTART_CPS = (10, 2, 4)
QUICKSTART_CHUNKS = (1, 90, 90)


def load_quickstart() -> ModuleType:
    """Import ``examples/quickstart.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load examples/quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variable_prefixes(root: str) -> tuple[str, ...]:
    """Return the object path prefixes of the quickstart dataset's two data variables."""
    return (f"{root}/temperature/", f"{root}/precip/")


def kind_of(request: Request, root: str) -> str:
    """Classify a request: ``data`` or ``metadata`` object under ``root``, else ``other``."""
    if not request.path.startswith(root + "/"):
        return "other"  # bucket-level: listings, HEAD of the bucket
    return "metadata" if request.path.rsplit("/", 1)[-1].startswith(".z") else "data"


def summarize(requests: Iterable[Request], root: str) -> dict[str, int]:
    """Count requests by kind: data PUT/GET/HEAD, metadata, other and total."""
    counts = {"data PUT": 0, "data GET": 0, "data HEAD": 0, "metadata": 0, "other": 0, "total": 0}
    for request in requests:
        kind = kind_of(request, root)
        name = f"data {request.method}" if kind == "data" else kind
        counts[name] = counts.get(name, 0) + 1
        counts["total"] += 1
    return counts


def report_counts(section: str, rows: dict[str, dict[str, int]]) -> None:
    """Print a table of request counts and merge it into ``$SHARDEDSTORE_REQUEST_COUNTS``."""
    columns = list(next(iter(rows.values())))
    print(f"\n{section} requests ({QUICKSTART_DAYS}-day quickstart dataset)")
    print(f"{'':22}" + "".join(f"{c:>11}" for c in columns))
    for name, counts in rows.items():
        print(f"{name:22}" + "".join(f"{counts[c]:>11}" for c in columns))
    target = os.environ.get(COUNTS_ENV)
    if target:
        path = Path(target)
        document = json.loads(path.read_text()) if path.exists() else {}
        document["dataset"] = {
            "source": "examples/quickstart.py make_dataset",
            "days": QUICKSTART_DAYS,
            "zarr_chunks": list(QUICKSTART_CHUNKS),
            "chunks_per_shard": list(QUICKSTART_CPS),
        }
        document[section] = rows
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
