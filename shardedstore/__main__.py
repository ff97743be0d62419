"""``python -m shardedstore``: the command line (:mod:`shardedstore.tools.cli`)."""

from __future__ import annotations

from shardedstore.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
