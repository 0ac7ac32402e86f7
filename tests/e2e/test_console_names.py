"""Agents are shown by their Slack display names (users.info, cached), never as Slack ids."""

from __future__ import annotations

import json

from .conftest import RULES, SUPPORT, Stack, eventually, running_stack


async def test_the_customer_and_the_card_see_the_agents_name_not_an_id(database_url: str) -> None:
    texts = RULES.texts.model_copy(update={"show_agent_name": True})
    rules = RULES.model_copy(update={"texts": texts})
    async with running_stack(database_url, rules=rules) as stack:
        await _names(stack)


async def _names(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(42, "Where is my parcel?", first_name="Ann")
    card = await stack.card()
    # Bob answers an unclaimed ticket: that claims it, and everyone sees his name.
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "Hi Ann, it left the depot today.")
    sent = await tg.wait_for_sent(42, 2)
    assert sent[1]["text"] == "Bob: Hi Ann, it left the depot today."
    await stack.thread_has(card["ts"], "🙋 *Bob* claimed this ticket.")

    async def named() -> bool:
        blocks = json.dumps(stack.cards()[0]["blocks"], ensure_ascii=False)
        return "Waiting on the customer · *Bob*" in blocks

    await eventually(named, "the card to name Bob")
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "It arrives tomorrow.")
    sent = await tg.wait_for_sent(42, 3)
    assert sent[2]["text"] == "Bob: It arrives tomorrow."
    assert not any("U0BOB" in m["text"] for m in sent)  # never a Slack id to the customer
    assert (await stack.ticket()).assignee_name == "Bob"
    # The name was looked up once and then served from the cache.
    assert slack.calls.count("users.info") == 1
