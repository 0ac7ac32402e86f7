"""users.info display names: what Slack shows, cached with a TTL, a failure falls back."""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError

from adapters.slack_people import DisplayNames, display_name


class _Client:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.user: dict[str, Any] = {
            "name": "alice.m",
            "real_name": "Alice Martin",
            "profile": {"display_name": "Ally", "real_name": "Alice Martin"},
        }

    async def users_info(self, *, user: str) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise SlackApiError("user_not_found", {"ok": False, "error": "user_not_found"})  # type: ignore[no-untyped-call]
        return {"ok": True, "user": {"id": user, **self.user}}


def test_display_name_prefers_what_slack_shows() -> None:
    assert display_name({"name": "a", "profile": {"display_name": " Ally  B "}}) == "Ally B"
    assert display_name({"name": "a", "profile": {"display_name": "", "real_name": "Al"}}) == "Al"
    assert display_name({"name": "alice"}) == "alice"
    assert display_name(None) == ""


async def test_names_are_cached_until_the_ttl_and_failures_fall_back() -> None:
    client = _Client()
    now = [0.0]
    names = DisplayNames(client, ttl=100, clock=lambda: now[0])  # type: ignore[arg-type]
    assert await names.get("U1", "alice") == "Ally"
    assert await names.get("U1", "alice") == "Ally"
    assert client.calls == 1
    client.user["profile"]["display_name"] = "Alice"
    now[0] = 101  # past the TTL: read again, so a rename shows
    assert await names.get("U1") == "Alice"
    assert client.calls == 2
    client.fail = True
    assert await names.get("U2", "bob") == "bob"  # Slack could not say: the payload's name
    assert await names.get("U2", "bob") == "bob"
    assert client.calls == 3  # a failure is not retried on every event


async def test_a_value_that_is_no_user_id_is_never_looked_up() -> None:
    client = _Client()
    names = DisplayNames(client)  # type: ignore[arg-type]
    for junk in ("", "[{}, 'x']", "U" + "X" * 5000, "alice"):
        assert await names.get(junk, "fallback") == "fallback"
    assert client.calls == 0
