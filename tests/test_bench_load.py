"""bench/load.py at CI size, so the load harness cannot rot: each mode runs small against a real
desk process (SQLite, rules only) and must account for every customer message.

The full forms (``python -m bench.load sustained`` for five minutes at 50 a second, ``burst``
of 300) are in the README, "Sustained load and a burst under real limits"; this only proves
the harness measures and counts what it says, not that the targets are met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.load import SLACK_BURST, burst, main, slack_accounting, sustained


class _Slack:
    def __init__(self, channels: dict[str, list[dict[str, object]]]) -> None:
        self.channels = channels


class _StandIns:
    def __init__(self, channels: dict[str, list[dict[str, object]]]) -> None:
        self.slack = _Slack(channels)


def _card(ts: str, *marks: int) -> dict[str, object]:
    text = " ".join(f"ref L{k:06d}Q" for k in marks)
    return {"ts": ts, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def _reply(ts: str, thread: str, k: int) -> dict[str, object]:
    return {"ts": ts, "thread_ts": thread, "text": f"ref L{k:06d}Q"}


def test_accounting_takes_either_of_a_customers_messages_as_the_one_that_opened_the_card() -> None:
    # Customer 0 sent 0 then 1, 50 ms apart; 1 reached the desk first and opened the card.
    # Customer 1 sent 2 then 3; 3 never reached Slack. Customer 2's card shows 4 twice.
    customer_of = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2}
    posted = [_card("1.0", 1), _reply("1.1", "1.0", 0), _card("2.0", 2), _card("3.0", 4)]
    posted.append(_reply("3.1", "3.0", 4))
    cards, in_threads, without_card, lost, doubled = slack_accounting(
        _StandIns({"C1": posted}),  # type: ignore[arg-type]
        customer_of,
    )
    assert (cards, in_threads, without_card, lost, doubled) == (3, 2, 0, 1, 0 + 1)
    # A reply in another customer's thread is not theirs: 0 is lost when only card 2 has it.
    posted = [_card("1.0", 1), _card("2.0", 2), _reply("2.1", "2.0", 0)]
    assert slack_accounting(_StandIns({"C1": posted}), {0: 0, 1: 0, 2: 1})[3] == 1  # type: ignore[arg-type]


async def test_sustained_offers_on_schedule_and_every_message_reaches_slack() -> None:
    result = await sustained(rate=20, seconds=2, model="rules", drain_timeout=60)
    figures = result.figures()
    assert result.offered == 40 and len(result.ack_ms) == 40
    assert figures["non_2xx"] == 0 and result.statuses == {200: 40}
    # Every customer's first message is one card, every repeat is in that card's thread.
    assert result.customers + result.follow_ups == 40
    assert result.cards == result.customers
    assert result.in_threads == result.follow_ups
    assert figures["lost"] == 0 and result.without_card == 0 and result.doubled == 0
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
