"""Incident detection decisions on hand-made signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from bot.domain.surge import OpenIncident, Seen, Surges, centroid, decide

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
DOWN = np.array([1.0, 0.0, 0.0])
DOWN_TOO = np.array([0.95, 0.31, 0.0])  # cosine 0.95 with DOWN
OTHER = np.array([0.0, 1.0, 0.0])
SETTINGS = Surges(min_tickets=3, window_minutes=10, similarity=0.9)


def seen(n: int, minutes: float, **kw: object) -> Seen:
    return Seen(ticket_id=n, at=T0 + timedelta(minutes=minutes), team="support", **kw)  # type: ignore[arg-type]


def test_the_same_urgent_keyword_opens_an_incident_at_the_threshold() -> None:
    recent = [seen(1, 0, keyword="outage"), seen(2, 1, keyword="outage"), seen(3, 2)]
    assert decide(seen(4, 3, keyword="outage"), recent[:1], [], SETTINGS).action == "alone"
    got = decide(seen(4, 3, keyword="outage"), recent, [], SETTINGS)
    assert (got.action, got.together, got.why) == ("open", (1, 2), "keyword 'outage'")


def test_similar_wording_counts_only_with_the_same_intent() -> None:
    recent = [
        seen(1, 0, intent="payment_issue", vector=DOWN),
        seen(2, 1, intent="payment_issue", vector=DOWN_TOO),
        seen(3, 2, intent="get_refund", vector=DOWN),  # close wording, another intent
        seen(5, 2, intent="payment_issue", vector=OTHER),  # same intent, other wording
    ]
    got = decide(seen(4, 3, intent="payment_issue", vector=DOWN), recent, [], SETTINGS)
    assert (got.action, got.together) == ("open", (1, 2))
    assert got.why == "intent payment_issue, similar wording"


def test_old_attached_and_other_teams_tickets_do_not_count() -> None:
    recent = [
        seen(1, -11, keyword="outage"),  # outside the window
        seen(2, 1, keyword="outage", incident_id=9),  # already in an incident
        Seen(ticket_id=3, at=T0, team="billing", keyword="outage"),
        seen(5, 2, keyword="outage"),
    ]
    assert decide(seen(4, 3, keyword="outage"), recent, [], SETTINGS).action == "alone"


def test_a_matching_open_incident_takes_the_ticket() -> None:
    inc = OpenIncident(7, "support", None, "payment_issue", centroid([DOWN, DOWN_TOO]))
    got = decide(seen(4, 3, intent="payment_issue", vector=DOWN), [], [inc], SETTINGS)
    assert (got.action, got.incident_id) == ("attach", 7)
    other_team = OpenIncident(8, "billing", "outage", None, None)
    assert decide(seen(5, 3, keyword="outage"), [], [other_team], SETTINGS).action == "alone"
    off = Surges(enabled=False)
    assert decide(seen(4, 3, intent="payment_issue", vector=DOWN), [], [inc], off).action == "alone"
