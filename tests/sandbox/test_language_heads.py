"""What ``deskbot sandbox`` says and does about the Chinese and Spanish heads before the desk
starts: builds them where their research data is, says in one line why their cards show no
model reading where it is not, and starts anyway when a build fails."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.commands.sandbox import prepare_language_heads
from nlp.research_heads import Plan, plan
from tests.research_data import write_research_data


def _plan(tmp_path: Path, **kw: Any) -> Plan:
    return replace(
        Plan(built=(), to_build=(), no_data=(), can_fit=True, data_dir=tmp_path / "data"), **kw
    )


@pytest.fixture(autouse=True)
def _desk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESK_LANGUAGE_HEADS", raising=False)
    monkeypatch.delenv("DESK_MODEL", raising=False)


async def test_without_the_data_one_line_says_why_and_nothing_is_built(tmp_path: Path) -> None:
    said: list[str] = []
    built = await prepare_language_heads(
        "local",
        say=said.append,
        plan=plan(local=tmp_path / "local", data_root=tmp_path / "nowhere"),
        command=[sys.executable, "-c", "raise SystemExit('must not run')"],
    )
    assert not built and len(said) == 1
    line = said[0]
    assert line.startswith('Chinese and Spanish cards show no model reading ("Model: not applied")')
    assert "waimai_10k (no licence stated)" in line and "InterTASS, research use" in line
    assert "terms forbid shipping them" in line
    assert str(tmp_path / "nowhere") in line and "the sandbox builds them on start" in line
    assert not (tmp_path / "local").exists()


async def test_with_the_data_it_says_what_why_and_how_long_then_builds(tmp_path: Path) -> None:
    said: list[str] = []
    marker = tmp_path / "ran"
    built = await prepare_language_heads(
        "local",
        say=said.append,
        plan=_plan(tmp_path, to_build=("zh", "es")),
        command=[sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
    )
    assert built and marker.exists()
    start, done = said
    assert start.startswith("Building the Chinese and Spanish sentiment heads on this machine")
    assert "terms forbid shipping a model trained on them" in start
    assert "once, about 10 s" in start
    assert done.startswith("  Built in ") and "nlp/heads/languages-local (git-ignored)" in done


async def test_a_failed_build_is_said_and_the_sandbox_goes_on(tmp_path: Path) -> None:
    said: list[str] = []
    built = await prepare_language_heads(
        "local",
        say=said.append,
        plan=_plan(tmp_path, to_build=("zh",)),
        command=[sys.executable, "-c", "raise SystemExit('out of disk space')"],
    )
    assert not built
    assert said[0].startswith("Building the Chinese sentiment heads")
    assert "The build failed after" in said[1] and "(out of disk space)" in said[1]
    assert said[1].endswith("Chinese cards show no model reading.")


async def test_a_build_that_hangs_is_stopped(tmp_path: Path) -> None:
    said: list[str] = []
    built = await prepare_language_heads(
        "local",
        say=said.append,
        plan=_plan(tmp_path, to_build=("es",)),
        command=[sys.executable, "-c", "import time; time.sleep(30)"],
        timeout=0.5,
    )
    assert not built and "The build failed" in said[1] and "(no answer in" in said[1]


async def test_without_scikit_learn_it_says_how_to_get_it(tmp_path: Path) -> None:
    said: list[str] = []
    built = await prepare_language_heads(
        "local", say=said.append, plan=_plan(tmp_path, to_build=("zh", "es"), can_fit=False)
    )
    assert not built and len(said) == 1
    assert "make sandbox` installs it" in said[0] and "'.[language-heads]'" in said[0]


async def test_nothing_when_already_built_or_the_model_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    built = _plan(tmp_path, built=("zh", "es"))
    assert not await prepare_language_heads("local", say=said.append, plan=built)
    due = _plan(tmp_path, to_build=("zh", "es"))
    assert not await prepare_language_heads("rules", say=said.append, plan=due)
    monkeypatch.setenv("DESK_LANGUAGE_HEADS", str(tmp_path))  # a folder chosen by hand
    assert not await prepare_language_heads("local", say=said.append, plan=due)
    assert said == []


async def test_the_real_build_command_fits_the_heads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subprocess the sandbox runs (python -m nlp.research_heads build zh es), on a tiny
    stand-in of the data, into a scratch folder instead of nlp/heads/languages-local."""
    monkeypatch.setenv("DESK_DATA_DIR", str(write_research_data(tmp_path / "data")))
    local = tmp_path / "languages-local"
    run = (
        "import sys; from pathlib import Path; import nlp.research_heads as r;"
        f" r.LOCAL = Path({str(local)!r}); sys.exit(r.main(sys.argv[1:]))"
    )
    said: list[str] = []
    due = plan(local=local)
    assert due.to_build == ("zh", "es")
    assert await prepare_language_heads(
        "local", say=said.append, plan=due, command=[sys.executable, "-c", run, "build", "zh", "es"]
    ), said
    assert plan(local=local).built == ("zh", "es")
