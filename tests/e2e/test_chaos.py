"""The short chaos run (bench/chaos.py) on PostgreSQL: three real ``deskbot run`` processes
behind a load balancer, one SIGKILLed and restarted every few seconds and every database
connection cut once, while customers write, an agent answers and resolves, and customers rate.
Nothing may be lost, doubled in Slack or reordered, and every desk must end healthy."""

from __future__ import annotations

import pytest

from bench.chaos import run
from tests.conftest import IN_CI, PG_URL


async def test_three_desks_under_kills_and_a_connection_cut_lose_nothing() -> None:
    if not PG_URL:
        if IN_CI:
            pytest.fail("CI=true but DESK_TEST_POSTGRES_URL is not set: the chaos test must run")
        pytest.skip("DESK_TEST_POSTGRES_URL not set")
    result = await run(PG_URL, seconds=20, processes=3, customers=8, messages=4, kill_every=4)
    print(result.summary())
    assert result.kills >= 1 and result.cuts == 1
    assert result.losses == [] and result.doubles == []
    assert result.cards_missing == [] and result.cards_doubled == []
    assert result.out_of_order == []
    # Every agent reply reaches its customer (one used to be lost in about one run of three:
    # a reply written before the card's ts was recorded was taken for channel chatter).
    assert result.replies_lost == []
    # The three desks keep the platforms' limits together (bot/delivery/ratelimit.py): no 429s.
    assert not any(result.paced_429s.values()), result.paced_429s
    assert result.unhealthy == [] and result.quiet_after is not None
    assert len(result.forwarded) == 3  # the balancer spread the webhooks over all three
