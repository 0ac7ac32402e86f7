"""``make browser-check`` leaves the tracked docs/sandbox.png alone unless asked to refresh it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent


def _dry_run(*args: str) -> str:
    return subprocess.run(
        ["make", "-n", "-W", ".venv/.installed", "browser-check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
def test_make_browser_check_writes_an_ignored_file_unless_told_otherwise() -> None:
    line = next(x for x in _dry_run().splitlines() if "sandbox.browser_check" in x)
    assert "docs/sandbox.png" not in line
    assert line.endswith("--out bench-results/sandbox.png")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "bench-results/sandbox.png"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "bench-results/sandbox.png must be ignored by git"
    # Refreshing the README's picture is a deliberate act.
    asked = _dry_run("OUT=docs/sandbox.png")
    assert "--out docs/sandbox.png" in asked


def test_the_script_alone_does_not_write_docs_either() -> None:
    from sandbox.browser_check import parse_args

    assert parse_args([]).out == ROOT.resolve() / "bench-results" / "sandbox.png"
    assert parse_args(["--out", "docs/sandbox.png"]).out == Path("docs/sandbox.png")
