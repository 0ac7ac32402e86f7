"""The ``curl`` lines ``deskbot sandbox`` prints: pasted into bash, every one of them works.

The banner of a sandbox on a real desk (the rules model) is split into its shell lines, and each
is run by bash in turn, as a person pasting them would: every request must get the control
API's JSON answer (a 400 is plain text), and the walk-through must end where it says it does:
the card claimed, answered and resolved, and the knowledge-base answer's button pressed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import DeskApp, make_knowledge
from bot.commands.sandbox import FIRST_WORDS, banner, sandbox_settings
from bot.domain.rules import load_rules
from sandbox import StandIns
from sandbox.ports import free_port as _free_port

from .test_control import ROOT

ASSIGN = re.compile(r"^([A-Z]+)=\$\(")


def shell_lines(text: str) -> list[str]:
    """The lines of the banner a person would paste: everything after "Or with curl"."""
    walk = text.split("Or with curl", 1)[1].split("\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in walk.splitlines() if line.strip()]


async def _bash(line: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
async def test_every_printed_curl_line_works_pasted_into_bash(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{port}", rate_limits=False)
    await standins.start()
    settings = sandbox_settings(standins, desk_port=port, database_url=database_url)
    assert settings.telegram is not None
    settings = replace(settings, telegram=replace(settings.telegram, poll_timeout=1), model="rules")
    rules = load_rules(ROOT / "rules.yaml")
    # As `deskbot sandbox` runs it: with the knowledge base of kb/ (its encoder, no classifier).
    knowledge = await make_knowledge(settings, rules, None)
    desk = DeskApp(settings, rules, idle_poll=0.05, knowledge=knowledge)
    await desk.start()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    try:
        text = banner(standins.url, f"http://127.0.0.1:{port}", "deskbot-sandbox.db")
        lines = shell_lines(text)
        commands = [line for line in lines if not line.startswith("#")]
        assert len(commands) >= 10, text
        answers = await _paste(commands, env)
        assert set(env) >= {"TS", "MID", "DATA"}
        assert env["DATA"].startswith("kb:solved:"), env["DATA"]
        # Alice's answer reached customer 42, and the card says who resolved it.
        texts = [m.get("text") for m in await standins.telegram.wait_for_sent(42, 2)]
        assert "Sorry! It ships today." in texts

        def resolved_card() -> bool:
            card = next(m for m in standins.slack.messages("C0SUPPORT") if m["ts"] == env["TS"])
            return "Resolved by" in json.dumps(card)

        # The card is updated a moment after the click's answer (through the outbox).
        assert await standins.slack.wait_for(resolved_card, 10), "the card never said Resolved"
        assert "callback_query_id" in answers[-1]
        # Pasted again, as on a continued sandbox: customer 42's message joins the ticket the
        # lines resolved, and $TS is that ticket's card, not the newest card (another
        # customer's, whose buttons are gone and whose chat would get Alice's answer).
        # (Line by line, as a person pastes them: the claim waits for the message to reopen
        # the ticket, whose resolved card has no buttons until then.)
        first_card = env["TS"]
        await _paste(commands[:1], env)

        def joined() -> bool:
            return any(
                FIRST_WORDS in json.dumps(m) for m in standins.slack.thread("C0SUPPORT", first_card)
            )

        assert await standins.slack.wait_for(joined, 10), "the message never joined its ticket"
        await _paste(commands[1:], env)
        assert env["TS"] == first_card

        def answered(chat: int) -> int:
            return [m.get("text") for m in standins.telegram.sent_to(chat)].count(
                "Sorry! It ships today."
            )

        sent = [m.get("text") for m in await standins.telegram.wait_for_sent(42, 1)]
        while sent.count("Sorry! It ships today.") < 2:  # wait_for_sent fails after 30 s
            sent = [m.get("text") for m in await standins.telegram.wait_for_sent(42, len(sent) + 1)]
        assert (answered(44), answered(45)) == (0, 0)
    finally:
        await desk.stop()
        await standins.stop()


async def _paste(commands: list[str], env: dict[str, str]) -> list[Any]:
    """Run each line as a person pasting it would (again a moment later if the desk has not
    answered yet); the variables a line sets go into ``env``. Returns the JSON answers."""
    answers: list[Any] = []
    for line in commands:
        assert "\\" not in line, f"no line may continue on the next one: {line}"
        assigned = ASSIGN.match(line)
        deadline = time.monotonic() + 15
        while True:  # the desk answers a moment later: a person would simply wait and retry
            code, out, err = await _bash(line, env)
            if (code == 0 and out.strip()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert code == 0 and out.strip(), f"{line}\n→ exit {code}: {out}{err}"
        if assigned:
            env[assigned.group(1)] = out.strip()
            continue
        try:
            answers.append(json.loads(out))
        except ValueError:
            pytest.fail(f"{line}\n→ not the control API's JSON answer: {out}")
    return answers


def test_the_fresh_advice_keeps_the_ports_the_sandbox_runs_on(tmp_path: Path) -> None:
    from bot.commands.sandbox import SandboxFiles, _story

    files = SandboxFiles("sqlite+aiosqlite:///x.db", tmp_path / "x.db", tmp_path / "x.json")
    default = _story(files, removed=[], tickets=3, loaded=True)
    assert "make sandbox ARGS=--fresh  (deskbot sandbox --fresh)" in default
    moved = _story(files, removed=[], tickets=3, loaded=True, ports=(9090, 9091))
    assert (
        'make sandbox ARGS="--fresh --port 9090 --standin-port 9091"'
        "  (deskbot sandbox --fresh --port 9090 --standin-port 9091)"
    ) in moved
