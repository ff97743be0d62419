"""Run ``examples/thewtex_readme.py`` (the composition example) end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_thewtex_readme_example_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "thewtex_readme.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "monolithic and composed stores read back identical" in result.stdout
    assert "reopened from their config: identical" in result.stdout
    assert (tmp_path / "config.json").is_file()
    assert (tmp_path / "zip_stores" / "base.zip").is_file()
