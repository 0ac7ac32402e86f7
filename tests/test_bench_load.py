"""bench/load.py at CI size, so the load harness cannot rot: each mode runs small against a real
desk process (SQLite, rules only) and must account for every customer message.

The full forms (``python -m bench.load sustained`` for five minutes at 50 a second, ``burst``
of 300) are in the README, "Sustained load and a burst under real limits"; this only proves
the harness measures and counts what it says, not that the targets are met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import SLACK_BURST, burst, main, sustained


async def test_sustained_offers_on_schedule_and_every_message_reaches_slack() -> None:
    result = await sustained(rate=20, seconds=2, model="rules", drain_timeout=60)
    figures = result.figures()
    assert result.offered == 40 and len(result.ack_ms) == 40
    assert figures["non_2xx"] == 0 and result.statuses == {200: 40}
    # Every customer's first message is one card, every repeat is in that card's thread.
    assert result.customers + result.follow_ups == 40
    assert result.cards == result.customers
    assert result.in_threads == result.follow_ups
    assert figures["lost"] == 0 and result.doubled == 0
    assert result.quiet_after_s is not None
    # The open loop kept its schedule (the figures mean what they say).
    assert 10 <= result.sent_rate <= 30
    assert 0 < figures["ack_p50_ms"] <= figures["ack_p99_ms"] <= figures["ack_max_ms"]
    assert result.backlog and result.rss_mb > 50
    summary = result.summary()
    assert "p99" in summary and "lost 0" in summary


async def test_burst_under_real_limits_loses_nothing_and_keeps_slacks_pace() -> None:
    result = await burst(tickets=24, model="rules", timeout=60)
    assert result.cards == 24 and result.lost == 0 and result.doubled == 0
    # The desk keeps its own pace: the stand-ins refused nothing for going too fast.
    assert result.paced_429s == {"telegram": 0, "whatsapp": 0, "slack": 0}
    # Routed by rules.yaml to the four teams' channels, each measured against Slack's limit.
    channels = {c.channel: c for c in result.channels}
    assert set(channels) == {"C0SUPPORT", "C0BILLING", "C0ZH", "C0VIP"}
    for c in result.channels:
        assert c.posts >= 1 and c.refused_429 == 0
        assert c.posts <= c.allowed and c.allowed >= SLACK_BURST
    assert 0 < result.utilisation <= 1


def test_the_command_writes_json_with_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "burst.json"
    code = main(["burst", "--tickets", "8", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["lost"] == 0 and data["cards"] == 8
    assert {"utilisation", "channels", "paced_429s", "post_times", "machine"} <= set(data)
    # Eight tickets cannot use 95% of a 10-post burst allowance: the command says FAILED.
    assert code == 1 and data["ok"] is False


@pytest.mark.parametrize("mode", ["sustained", "burst"])
def test_help_names_the_options(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([mode, "--help"])
    text = capsys.readouterr().out
    assert "--database" in text and "--json" in text
