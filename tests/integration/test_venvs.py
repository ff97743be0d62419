"""Build the Zarr v3 reader environments and check they hold the pinned versions."""

from __future__ import annotations

import pytest

from tests.support.venvs import REQUIREMENTS, VenvCommandError, run_in_venv, v3_python

pytestmark = pytest.mark.v3


def test_v3_venvs_build_and_import_their_readers() -> None:
    assert v3_python("zarr3").is_file()
    zarr3 = run_in_venv("zarr3", "import zarr, sys; print(zarr.__version__, sys.argv[1])", "ok")
    assert zarr3.stdout.split() == ["3.1.6", "ok"]
    assert "zarr==3.1.6" in REQUIREMENTS["zarr3"]

    code = "import importlib.metadata as m, tensorstore; print(m.version('tensorstore'))"
    ts = run_in_venv("tensorstore", code)
    assert ts.stdout.strip() == "0.1.86"

    code = "import shardedstore, zarr; print(shardedstore.__version__, shardedstore.__file__)"
    version, where = run_in_venv("thewtex", code).stdout.split()
    assert version == "0.3.1"
    assert "site-packages" in where  # the real one from PyPI, not this checkout


def test_run_in_venv_raises_with_stderr() -> None:
    with pytest.raises(VenvCommandError, match="boom") as info:
        run_in_venv("zarr3", "raise SystemExit('boom')")
    assert info.value.returncode == 1
