"""`deskbot check` says what `deskbot run` would refuse, and both refuse it with one line
(exit code 2, "deskbot: …"), never a traceback: run as a user runs them, in a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
GOOD = {
    "DESK_RULES": str(ROOT / "rules.yaml"),
    "DESK_MODEL": "rules",
    "TELEGRAM_BOT_TOKEN": "123:abc",
    "TELEGRAM_API_BASE": "http://127.0.0.1:9",
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s",
    "SLACK_API_BASE": "http://127.0.0.1:9/api/",
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deskbot(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DESK_", "SLACK_"))}
    clean = {k: v for k, v in clean.items() if not k.startswith(("TELEGRAM_", "WHATSAPP_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", command],
        env={**clean, "PYTHONPATH": str(ROOT), **GOOD, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


BAD = {
    "no Slack": (
        {"SLACK_BOT_TOKEN": "", "SLACK_SIGNING_SECRET": ""},
        "deskbot: Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET",
    ),
    "gpu": (
        {"DESK_INFERENCE": "gpu", "DESK_MODEL": "local"},
        "deskbot: DESK_INFERENCE must be 'onnx' or 'torch', got 'gpu'",
    ),
    "heads": (
        {"DESK_HEADS": "/nonexistent", "DESK_MODEL": "local"},
        "deskbot: DESK_HEADS is /nonexistent, which does not exist",
    ),
    "mysql": (
        {"DESK_DATABASE_URL": "mysql://desk:secret@localhost/desk"},
        "deskbot: DESK_DATABASE_URL: mysql:// is not supported; the desk runs on SQLite",
    ),
    "postgres down": (
        {"DESK_DATABASE_URL": f"postgresql://desk:secret@127.0.0.1:{_closed_port()}/desk"},
        "deskbot: cannot reach the database at postgresql+asyncpg://desk:***@127.0.0.1:",
    ),
    "log level": (
        {"DESK_LOG_LEVEL": "LOUD"},
        "deskbot: DESK_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
    ),
    "body": (
        {"DESK_MAX_BODY_BYTES": "-5"},
        "deskbot: DESK_MAX_BODY_BYTES must be a whole number of at least 1, got '-5'",
    ),
    "sqlite thread": (
        {"DESK_SQLITE_THREAD": "maybe"},
        "deskbot: DESK_SQLITE_THREAD must be 1 (SQLite's statements on aiosqlite's thread) or 0",
    ),
    "sqlite folder": (
        {"DESK_DATABASE_URL": "sqlite+aiosqlite:////nonexistent/desk.db"},
        "deskbot: the SQLite file's folder /nonexistent does not exist",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_check_and_run_refuse_a_bad_setting_in_one_line(case: str, tmp_path: Path) -> None:
    env, said = BAD[case]
    with ThreadPoolExecutor(2) as pool:
        check, run = pool.map(lambda c: deskbot(c, env, tmp_path), ["check", "run"])
    for ran in (check, run):
        assert ran.returncode == 2, ran.stderr
        (line,) = ran.stderr.splitlines()  # one line, no traceback
        assert line.startswith(said), line
        assert "secret" not in line
    assert check.stderr == run.stderr


def test_check_says_what_it_found_and_connects_to_the_database(tmp_path: Path) -> None:
    ran = deskbot("check", {"DESK_SQLITE_THREAD": "yes"}, tmp_path)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == (
        "settings ok (customer channels: telegram; slack: Events API at /slack/events;"
        " model: rules; log level: INFO; SQLite statements on aiosqlite's thread)"
    )
    assert "zh → C0ZH (round_robin, 1 agent)" in lines[1]
    assert lines[-1] == f"database sqlite+aiosqlite:///{tmp_path}/deskbot.db: no file yet," + (
        " `deskbot run` creates it"
    )
    assert not (tmp_path / "deskbot.db").exists()  # check changes nothing


def _automations_rules(tmp_path: Path, automations: str) -> dict[str, str]:
    from tests.test_automations import DESK

    rules = tmp_path / "rules.yaml"
    rules.write_text(DESK + "kb: {enabled: false}\n" + automations, encoding="utf-8")
    return {"DESK_RULES": str(rules)}


def test_check_validates_automations_as_written(tmp_path: Path) -> None:
    from tests.test_automations import ISSUE_EXAMPLE

    ran = deskbot("check", _automations_rules(tmp_path, ISSUE_EXAMPLE), tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[2] == (
        "automations ok (2 event rules, 2 time rules; chain_depth 3, at most 20 firings of a rule"
        " per ticket a day; replayable with `deskbot automations replay`, explained on a ticket"
        " with `deskbot automations explain`)"
    )


def test_check_and_run_name_a_bad_automations_field(tmp_path: Path) -> None:
    bad = """\
automations:
  - id: remind
    after: {pending: 24h}
    calendar: ofice
    do: [{reply: {macro: "Stil there?"}}]
"""
    env = _automations_rules(tmp_path, bad)
    with ThreadPoolExecutor(2) as pool:
        check, run = pool.map(lambda c: deskbot(c, env, tmp_path), ["check", "run"])
    for ran in (check, run):
        assert ran.returncode == 2, ran.stderr
        assert "Traceback" not in ran.stderr
        assert ran.stderr.splitlines()[1:] == [
            "  automations.0.calendar: unknown calendar 'ofice' (calendars: office, newyork,"
            " always)",
            "  automations.0.do.0.reply.macro: unknown macro 'Stil there?' ('Still there?',"
            " 'Closing for now')",
        ]
