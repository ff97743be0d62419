"""Draw ``docs/shard_layout.png``: how shardedstore lays chunks out in shards.

Top: the chunk grid of a 2-D array coloured by shard (4 x 4 chunks per shard; the edge
shards' slots beyond the array are hatched), with the Morton order of one shard's chunks.
Bottom: the bytes of that shard -- its chunks back to back in Morton order, then the
index of ``(offset, nbytes)`` pairs and its CRC32C.

Nothing is made up: the array is written through :class:`shardedstore.ShardedStore`
and the picture is drawn from the shard's real index. Run from the repository root::

    python scripts/draw_shard_layout.py            # writes docs/shard_layout.png
    python scripts/draw_shard_layout.py -o out.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numcodecs
import numpy as np
import zarr
from matplotlib.patches import Rectangle
from shardedstore._format import CHECKSUM_NBYTES
from shardedstore._morton import morton_order

from shardedstore import ShardedStore
from shardedstore.io.base import split_whole

CHUNKS = (8, 8)
CPS = (4, 4)
GRID = (10, 13)  # chunks per dimension: the last shard row and column are partial
SHARD = (0, 1)  # the shard drawn byte by byte
OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "shard_layout.png"


def make_array() -> tuple[Any, Any]:
    """Write a sample array through a ShardedStore; return ``(base store, layout)``."""
    base = zarr.storage.MemoryStore()
    store = ShardedStore(base, chunk_shards={"*": CPS})
    shape = (GRID[0] * CHUNKS[0], GRID[1] * CHUNKS[1] - 3)  # a partial last chunk too
    z = zarr.create(
        shape, chunks=CHUNKS, dtype="<f8", store=store, compressor=numcodecs.Zstd(),
        write_empty_chunks=False, fill_value=0.0,
    )  # fmt: skip
    y, x = np.mgrid[: shape[0], : shape[1]]
    noise = np.random.default_rng(7).normal(size=shape)
    z[:] = np.round(np.sin(x / 9) * np.cos(y / 7), 1) + noise * (x % 40 > 25)
    z[8:16, 40:48] = 0.0  # an all-fill chunk: not stored, an absent slot
    return base, store.layout("")


COLOURS = [plt.get_cmap("tab20")(i) for i in range(20)]


def shard_colour(shard: tuple[int, int]) -> Any:
    return COLOURS[(shard[0] * 5 + shard[1] * 2) % len(COLOURS)]


def draw_grid(ax: Any, order: list[int], absent: list[int]) -> None:
    """Draw the chunk grid coloured by shard and the Morton path through one shard."""
    rows, cols = (-(-g // n) * n for g, n in zip(GRID, CPS, strict=True))
    for r in range(rows):
        for c in range(cols):
            shard = (r // CPS[0], c // CPS[1])
            inside = r < GRID[0] and c < GRID[1]
            colour = shard_colour(shard)
            ax.add_patch(
                Rectangle(
                    (c, r), 1, 1, facecolor=colour if inside else "white",
                    edgecolor="white" if inside else colour, hatch=None if inside else "//",
                    linewidth=0.8,
                )
            )  # fmt: skip
    for r in range(0, rows + 1, CPS[0]):
        ax.plot([0, cols], [r, r], color="black", linewidth=2)
    for c in range(0, cols + 1, CPS[1]):
        ax.plot([c, c], [0, rows], color="black", linewidth=2)
    ax.add_patch(Rectangle((0, 0), GRID[1], GRID[0], fill=False, edgecolor="red", linewidth=1.5))
    top, left = SHARD[0] * CPS[0], SHARD[1] * CPS[1]
    path = [(left + s % CPS[1] + 0.5, top + s // CPS[1] + 0.5) for s in order]
    ax.plot(*zip(*path, strict=True), color="black", linewidth=1.2, marker="o", markersize=3)
    for i, (x, y) in enumerate(path):
        ax.text(x + 0.12, y - 0.12, str(i), fontsize=7, ha="left", va="bottom")
        if order[i] in absent:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="white", edgecolor="white"))
            ax.text(x, y + 0.3, "absent", ha="center", fontsize=6)
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_aspect("equal")
    ax.set_xlabel("chunk index, dimension 1")
    ax.set_ylabel("chunk index, dimension 0")
    ax.set_title(
        f"chunk grid {GRID[0]} x {GRID[1]} (red: the array), {CPS[0]} x {CPS[1]} chunks per "
        f"shard (black);\nhatched: slots of edge shards beyond the array; path: Morton order "
        f"in shard {SHARD[0]}.{SHARD[1]}",
        fontsize=9,
    )


def absent_slots(entries: Any) -> list[int]:
    """Return the slots of the shard that hold no chunk."""
    return [s for s in range(entries.shape[0]) if int(entries[s][0]) == 2**64 - 1]


def draw_bytes(ax: Any, data: bytes, entries: Any, order: list[int]) -> None:
    """Draw the byte layout of one shard from its decoded index."""
    index_start = len(data) - entries.shape[0] * 16 - CHECKSUM_NBYTES
    for i, slot in enumerate(order):
        offset, nbytes = (int(v) for v in entries[slot])
        if offset == 2**64 - 1:
            continue
        ax.add_patch(Rectangle((offset, 0), nbytes, 1, facecolor=shard_colour(SHARD),
                               edgecolor="black", linewidth=0.6))  # fmt: skip
        ax.text(offset + nbytes / 2, 0.5, str(i), ha="center", va="center", fontsize=7)
    blocks = [
        (index_start, len(data) - CHECKSUM_NBYTES - index_start, "lightgrey", "index"),
        (len(data) - CHECKSUM_NBYTES, CHECKSUM_NBYTES, "black", ""),
    ]
    for start, width, colour, label in blocks:
        ax.add_patch(Rectangle((start, 0), width, 1, facecolor=colour, edgecolor="black"))
        if label:
            ax.text(start + width / 2, 0.5, label, ha="center", va="center", fontsize=8)
    ax.annotate("CRC32C", (len(data), 1), (len(data), 1.6), ha="right", fontsize=8,
                arrowprops={"arrowstyle": "->"})  # fmt: skip
    absent = [order.index(s) for s in absent_slots(entries)]
    ax.set_xlim(0, len(data))
    ax.set_ylim(0, 2)
    ax.set_yticks([])
    ax.set_xlabel("byte offset in the shard object")
    ax.set_title(
        f"shard {SHARD[0]}.{SHARD[1]}: {len(data)} bytes = its present chunks in Morton order "
        f"(numbers as above; absent: {absent or 'none'}),\nthen the index: {entries.shape[0]} "
        "x (offset, nbytes) as little-endian uint64 in C order, and its CRC32C",
        fontsize=9,
    )


def main(argv: list[str] | None = None) -> int:
    """Draw the picture; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    base, layout = make_array()
    key = f"{SHARD[0]}.{SHARD[1]}"
    data = bytes(base[key])
    entries = split_whole(layout, key, data).entries
    order = morton_order(CPS).tolist()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 8.5), gridspec_kw={"height_ratios": [5, 1.2]}, layout="constrained"
    )
    draw_grid(top, order, absent_slots(entries))
    draw_bytes(bottom, data, entries, order)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=130)
    plt.close(fig)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
