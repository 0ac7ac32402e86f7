"""Correctly signed but hostile webhook bodies, shared by the property-based tests
(tests/e2e/test_hostile_input.py) and ``python -m bench.fuzz``.

Each body takes a valid platform payload and breaks it the way fuzzers and broken clients do:
a value replaced by deep nesting, a wrong type, text PostgreSQL refuses (NUL, lone surrogates),
a number beyond int64 or NaN, a key dropped, the body truncated or sent under a content
encoding. It is signed as the platform would sign it.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import itertools
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from hypothesis import strategies as st


@dataclass(frozen=True)
class Secrets:
    """What the desk under test was started with, to sign and address the bodies."""

    telegram: str
    whatsapp: str
    slack: str
    phone_number_id: str
    slack_channel: str


_ids = itertools.count(10_000)
DEEP = "\x1edeep\x1e"  # a placeholder the body builder swaps for deep nesting

# -- what a hostile value can be ---------------------------------------------------------------

hostile_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),  # surrogates too
    st.sampled_from(["\x00", "a\x00b", "\ud800", "\udfff x", "\u202e\u200b", "ｈｅｌｌｏ" * 30]),
    st.just("x" * 70_000),
)
hostile_number = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
hostile_leaf = st.one_of(st.none(), st.booleans(), hostile_number, hostile_text, st.just(DEEP))
hostile_value = st.recursive(
    hostile_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*at, i))
    return found


def replaced(doc: Any, path: tuple[Any, ...], new: Any, *, drop: bool = False) -> Any:
    if not path:
        return new
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    head, rest = path[0], path[1:]
    if drop and not rest:
        if isinstance(copy, dict):
            copy.pop(head, None)
        else:
            copy.pop(head)
        return copy
    copy[head] = replaced(copy[head], rest, new, drop=drop)
    return copy


def dumps(doc: Any, depth: int) -> bytes:
    text = json.dumps(doc, allow_nan=True)
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


@st.composite
def broken(draw: st.DrawFn, template: Any) -> tuple[bytes, dict[str, str]]:
    """A hostile body made from ``template`` and the extra headers to send it with."""
    doc = template
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(doc)))
        how = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if how == "drop" and path:
            doc = replaced(doc, path, None, drop=True)
        elif how == "add" and isinstance(doc, dict):
            doc = {**doc, draw(hostile_text): draw(hostile_value)}
        else:
            doc = replaced(doc, path, draw(hostile_value))
    depth = draw(st.sampled_from([10, 900, 5_000, 100_000]))
    body = dumps(doc, depth)
    headers: dict[str, str] = {}
    match draw(
        st.sampled_from(
            ["plain"] * 6 + ["truncated", "latin1", "gzip", "bad-gzip", "deflate", "br", "bogus"]
        )
    ):
        case "truncated":
            body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
        case "latin1":
            body = body.replace(b"e", b"\xe9")
        case "gzip":
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        case "bad-gzip":
            headers["Content-Encoding"] = "gzip"
        case "deflate":
            body, headers["Content-Encoding"] = zlib.compress(body), "deflate"
        case "br":
            headers["Content-Encoding"] = "br"
        case "bogus":
            headers["Content-Encoding"] = "x-fuzz"
    return body, headers


# -- the endpoints and their valid payloads -----------------------------------------------------


def telegram_update(chat: int, text: str, n: int | None = None) -> dict[str, Any]:
    n = next(_ids) if n is None else n
    person = {"id": chat, "is_bot": False, "first_name": "Fuzz"}
    return {
        "update_id": n,
        "message": {
            "message_id": n,
            "date": int(time.time()),
            "chat": {"id": chat, "type": "private", "first_name": "Fuzz"},
            "from": person,
            "text": text,
        },
    }


def whatsapp_envelope(
    wa_id: str, text: str, phone_number_id: str, n: int | None = None
) -> dict[str, Any]:
    n = next(_ids) if n is None else n
    message = {
        "from": wa_id,
        "id": f"wamid.FUZZ{n}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": text},
    }
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Fuzz"}, "wa_id": wa_id}],
        "messages": [message],
        "statuses": [{"id": "wamid.X", "status": "read", "timestamp": "1", "recipient_id": wa_id}],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }


def slack_event(channel: str, n: int | None = None) -> dict[str, Any]:
    n = next(_ids) if n is None else n
    return {
        "token": "sandbox-verification-token",
        "team_id": "T0SANDBOX",
        "api_app_id": "A0DESKBOT",
        "type": "event_callback",
        "event_id": f"EvFUZZ{n}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T0SANDBOX", "user_id": "U0DESKBOT", "is_bot": True}],
        "event": {
            "type": "message",
            "channel": channel,
            "user": "U0ALICE",
            "text": "hello",
            "ts": "1700000000.000200",
            "thread_ts": "1700000000.000100",
            "channel_type": "channel",
        },
    }


def slack_action(channel: str, n: int | None = None) -> dict[str, Any]:
    n = next(_ids) if n is None else n
    return {
        "type": "block_actions",
        "user": {"id": "U0ALICE", "username": "alice", "team_id": "T0SANDBOX"},
        "api_app_id": "A0DESKBOT",
        "token": "sandbox-verification-token",
        "trigger_id": f"{n}.abcdef012345",
        "team": {"id": "T0SANDBOX"},
        "channel": {"id": channel, "name": "support"},
        "container": {"type": "message", "message_ts": "1.000001", "channel_id": channel},
        "message": {"ts": "1.000001", "text": "card"},
        "actions": [
            {
                "type": "button",
                "action_id": "claim",
                "block_id": "b",
                "value": "1",
                "action_ts": "1",
            }
        ],
    }


def slack_command(channel: str, n: int | None = None) -> dict[str, Any]:
    n = next(_ids) if n is None else n
    return {
        "token": "sandbox-verification-token",
        "team_id": "T0SANDBOX",
        "team_domain": "sandbox",
        "channel_id": channel,
        "channel_name": "support",
        "user_id": "U0ALICE",
        "user_name": "alice",
        "command": "/desk",
        "text": "help",
        "api_app_id": "A0DESKBOT",
        "trigger_id": f"{n}.abcdef012345",
    }


def slack_headers(body: bytes, secret: str) -> dict[str, str]:
    ts = str(int(time.time()))
    base = f"v0:{ts}:".encode() + body
    sig = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}


def as_form(body: bytes, *, payload: bool) -> bytes:
    """A JSON body as Slack's form encoding: ``payload=<json>``, or the command's fields."""
    if payload:
        return urlencode(
            {"payload": body.decode("utf-8", "surrogateescape")}, errors="surrogateescape"
        ).encode()
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        return body  # not even JSON any more: sent as it is, a broken form
    if not isinstance(fields, dict):
        return body
    return urlencode(
        {str(k): json.dumps(v) if not isinstance(v, str) else v for k, v in fields.items()},
        errors="surrogatepass",
    ).encode()


def sign_for(endpoint: str, body: bytes, secrets: Secrets) -> dict[str, str]:
    match endpoint:
        case "telegram":
            return {
                "Content-Type": "application/json",
                "X-Telegram-Bot-Api-Secret-Token": secrets.telegram,
            }
        case "whatsapp":
            sig = "sha256=" + hmac.new(secrets.whatsapp.encode(), body, hashlib.sha256).hexdigest()
            return {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
        case "slack_event":
            return {"Content-Type": "application/json", **slack_headers(body, secrets.slack)}
        case _:
            return {
                "Content-Type": "application/x-www-form-urlencoded",
                **slack_headers(body, secrets.slack),
            }


PATHS = {
    "telegram": "/telegram/webhook",
    "whatsapp": "/whatsapp/webhook",
    "slack_event": "/slack/events",
    "slack_action": "/slack/events",
    "slack_command": "/slack/events",
}


def templates(secrets: Secrets) -> dict[str, Callable[[int], Any]]:
    """A valid payload of each endpoint, given the number its ids are made from (drawn by
    hypothesis, so that replaying an example makes the very same body)."""
    return {
        "telegram": lambda n: telegram_update(777_001, "my parcel is late", n),
        "whatsapp": lambda n: whatsapp_envelope(
            "15550009999", "my parcel is late", secrets.phone_number_id, n
        ),
        "slack_event": lambda n: slack_event(secrets.slack_channel, n),
        "slack_action": lambda n: slack_action(secrets.slack_channel, n),
        "slack_command": lambda n: slack_command(secrets.slack_channel, n),
    }


def payloads(template: Callable[[int], Any]) -> st.SearchStrategy[tuple[bytes, dict[str, str]]]:
    """Hostile bodies made from ``template``, each with fresh ids."""
    return st.integers(10_000, 2**30 - 1).map(template).flatmap(broken)


def signed_request(
    endpoint: str, body: bytes, extra: dict[str, str], secrets: Secrets
) -> tuple[str, bytes, dict[str, str]]:
    """The path, body (as a form for Slack's interactivity and commands) and signed headers."""
    if endpoint in ("slack_action", "slack_command"):
        body = as_form(body, payload=endpoint == "slack_action")
    return PATHS[endpoint], body, {**sign_for(endpoint, body, secrets), **extra}
