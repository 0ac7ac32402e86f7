"""What the Slack adapter accepts from the console's modals and the message shortcut, and what
it drops: forged metadata, someone else's callback, a payload without its parts."""

from __future__ import annotations

import json
from typing import Any

from adapters.slack import (
    is_reply_modal,
    parse_note_submission,
    parse_reply_modal_action,
    parse_reply_submission,
    parse_send_shortcut,
)
from bot.domain.events import AgentReply, CustomerNote, Ignored, ReplyModal


def _view(meta: Any, values: dict[str, Any], callback: str = "reply_modal") -> dict[str, Any]:
    return {
        "id": "V1",
        "hash": "h1",
        "type": "modal",
        "callback_id": callback,
        "private_metadata": meta if isinstance(meta, str) else json.dumps(meta),
        "state": {"values": values},
    }


TEXT = {"reply_text.a1": {"reply_text": {"type": "plain_text_input", "value": "Hi Ann"}}}
MACRO = {"macro": {"reply_macro": {"selected_option": {"value": "Refund"}}}}


def test_the_reply_modals_send_and_its_picks() -> None:
    body = {"type": "view_submission", "user": {"id": "U0A", "username": "a"}}
    sent = parse_reply_submission({**body, "view": _view({"ticket": 7}, TEXT | MACRO)})
    assert isinstance(sent, AgentReply)
    assert (sent.ticket_id, sent.text, sent.macro, sent.source) == (7, "Hi Ann", "Refund", "modal")
    assert is_reply_modal({"view": _view({}, {})})
    # Stored with the card's events (ordered with them, erased with the customer), unless the
    # metadata names no card.
    conv = {"ticket": 7, "conv": "slack:C0SUPPORT:1700000000.000001"}
    on_card = parse_reply_submission({**body, "view": _view(conv, TEXT)})
    assert on_card.conversation == "slack:C0SUPPORT:1700000000.000001"
    elsewhere = parse_reply_submission({**body, "view": _view({"ticket": 7, "conv": "x"}, TEXT)})
    assert elsewhere.conversation == "slack:view:V1"
    for forged in ('{"ticket": "7"}', '{"ticket": -1}', "not json", '{"ticket": 1e30}'):
        assert isinstance(parse_reply_submission({**body, "view": _view(forged, TEXT)}), Ignored)
    action = {
        "type": "block_actions",
        "user": {"id": "U0A"},
        "view": _view({"ticket": 7}, TEXT),
        "actions": [
            {"action_id": "reply_macro", "selected_option": {"value": "Refund"}, "action_ts": "1.2"}
        ],
    }
    picked = parse_reply_modal_action(action)
    assert isinstance(picked, ReplyModal)
    assert (picked.picked, picked.macro, picked.text, picked.revision) == (
        True,
        "Refund",
        "Hi Ann",
        "a1",
    )
    typing = {
        **action,
        "actions": [{"action_id": "reply_text", "value": "Hi A", "action_ts": "1.3"}],
    }
    typed = parse_reply_modal_action(typing)
    assert isinstance(typed, ReplyModal) and (typed.picked, typed.text) == (False, "Hi A")
    other = {**action, "actions": [{"action_id": "x", "action_ts": "1.4"}]}
    assert isinstance(parse_reply_modal_action(other), Ignored)


def test_the_send_to_customer_shortcut() -> None:
    message = {"ts": "2.000002", "thread_ts": "1.000001", "user": "U0A", "text": "Hi"}
    body: dict[str, Any] = {
        "type": "message_action",
        "callback_id": "send_to_customer",
        "action_ts": "5.5",
        "user": {"id": "U0A", "username": "a"},
        "channel": {"id": "C0SUPPORT"},
        "message": message,
        "response_url": "https://hooks.slack.test/r/2",
    }
    event = parse_send_shortcut(body)
    assert isinstance(event, AgentReply)
    assert (event.thread_ts, event.ts, event.text, event.from_bot) == (
        "1.000001",
        "2.000002",
        "Hi",
        False,
    )
    bots = parse_send_shortcut({**body, "message": {**message, "bot_id": "B1"}})
    assert isinstance(bots, AgentReply) and bots.from_bot
    assert isinstance(parse_send_shortcut({**body, "callback_id": "theirs"}), Ignored)
    assert isinstance(parse_send_shortcut({**body, "message": {}}), Ignored)


def test_the_history_modals_note() -> None:
    values = {"note": {"customer_note": {"type": "plain_text_input", "value": "VIP"}}}
    body = {"type": "view_submission", "user": {"id": "U0A"}}
    meta = {"ticket": 7, "customer": 3}
    note = parse_note_submission({**body, "view": _view(meta, values, "history_modal")})
    assert isinstance(note, CustomerNote) and (note.customer_id, note.text) == (3, "VIP")
    for forged in ({"ticket": 7}, {"ticket": 7, "customer": "3"}, {"ticket": 0, "customer": 3}):
        view = _view(forged, values, "history_modal")
        assert isinstance(parse_note_submission({**body, "view": view}), Ignored)


def test_the_confirmed_forget_button_in_an_ephemeral_answer_is_the_confirmed_command() -> None:
    """Slack's block_actions for a button in a /desk answer (ephemeral: no "message"), after
    the confirm dialog's "Forget": the same command as `/desk forget c7 confirm`."""
    from adapters.slack import parse_block_actions
    from bot.domain.events import SlashCommand

    body: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0CAROL", "username": "carol", "team_id": "T1"},
        "team": {"id": "T1", "domain": "acme"},
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": "C0SUPPORT",
            "is_ephemeral": True,
        },
        "channel": {"id": "C0SUPPORT", "name": "support"},
        "response_url": "https://hooks.slack.com/actions/T1/1/abc",
        "actions": [
            {
                "type": "button",
                "action_id": "desk_forget",
                "block_id": "forget",
                "value": "c7",
                "style": "danger",
                "confirm": {"title": {"type": "plain_text", "text": "Forget this customer?"}},
                "action_ts": "1700000001.000200",
            }
        ],
    }
    event = parse_block_actions(body)
    assert isinstance(event, SlashCommand)
    assert (event.text, event.user_id, event.slack_channel) == (
        "forget c7 confirm",
        "U0CAROL",
        "C0SUPPORT",
    )
    assert event.response_url == "https://hooks.slack.com/actions/T1/1/abc"
    forged = {**body, "actions": [{**body["actions"][0], "value": "c7 ; rm"}]}
    assert not isinstance(parse_block_actions(forged), SlashCommand)
