"""Incident detection decisions on hand-made signatures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from bot.domain.surge import OpenIncident, Seen, Surges, centroid, decide, joined

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
DOWN = np.array([1.0, 0.0, 0.0])
DOWN_TOO = np.array([0.95, 0.31, 0.0])  # cosine 0.95 with DOWN
DOWN_ASIDE = np.array([0.8, 0.0, 0.6])  # cosine 0.8 with DOWN, 0.76 with DOWN_TOO
OTHER = np.array([0.0, 1.0, 0.0])
SETTINGS = Surges(
    min_tickets=3, window_minutes=10, similarity=0.9, incident_similarity=0.85, neighbours=2
)


def seen(n: int, minutes: float, **kw: object) -> Seen:
    return Seen(ticket_id=n, at=T0 + timedelta(minutes=minutes), team="support", **kw)  # type: ignore[arg-type]


def test_the_same_urgent_keyword_opens_an_incident_at_the_threshold() -> None:
    recent = [seen(1, 0, keyword="outage"), seen(2, 1, keyword="outage"), seen(3, 2)]
    assert decide(seen(4, 3, keyword="outage"), recent[:1], [], SETTINGS).action == "alone"
    got = decide(seen(4, 3, keyword="outage"), recent, [], SETTINGS)
    assert (got.action, got.together, got.why) == ("open", (1, 2), "shared urgent word 'outage'")


def test_similar_wording_opens_an_incident_whatever_the_words_mean_to_a_classifier() -> None:
    recent = [
        seen(1, 0, vector=DOWN),
        seen(2, 1, vector=DOWN_TOO),
        seen(5, 2, vector=OTHER),  # other wording
    ]
    got = decide(seen(4, 3, vector=DOWN), recent, [], SETTINGS)
    assert (got.action, got.together) == ("open", (1, 2))
    assert got.why.startswith("similar wording (cosine 0.9")
    assert got.why.endswith("to the incident's messages)")
    assert got.centroid is not None and float(got.centroid @ OTHER) < 0.2


def test_first_messages_close_to_the_group_but_not_to_the_newest_join_when_it_opens() -> None:
    recent = [seen(1, 0, vector=DOWN), seen(2, 1, vector=DOWN_TOO), seen(3, 2, vector=DOWN_ASIDE)]
    aside_only = Surges(min_tickets=3, similarity=0.9, incident_similarity=0.79)
    got = decide(seen(4, 3, vector=DOWN), recent, [], aside_only)
    assert (got.action, got.together) == ("open", (1, 2, 3))  # 3 is 0.8 from the newest only
    assert decide(seen(4, 3, vector=DOWN), recent, [], SETTINGS).together == (1, 2)


def test_old_attached_and_other_teams_tickets_do_not_count() -> None:
    recent = [
        seen(1, -11, keyword="outage"),  # outside the window
        seen(2, 1, keyword="outage", incident_id=9),  # already in an incident
        Seen(ticket_id=3, at=T0, team="billing", keyword="outage"),
        seen(5, 2, keyword="outage"),
    ]
    assert decide(seen(4, 3, keyword="outage"), recent, [], SETTINGS).action == "alone"


def test_a_matching_open_incident_takes_the_ticket_and_says_how_close_it_is() -> None:
    inc = OpenIncident(7, "support", None, centroid([DOWN, DOWN_TOO]), (DOWN, DOWN_TOO))
    got = decide(seen(4, 3, vector=DOWN), [], [inc], SETTINGS)
    assert (got.action, got.incident_id) == ("attach", 7)
    assert got.why == "similar wording (cosine 0.99 to the incident's messages)"
    assert decide(seen(5, 3, vector=OTHER), [], [inc], SETTINGS).action == "alone"
    other_team = OpenIncident(8, "billing", "outage", None)
    assert decide(seen(5, 3, keyword="outage"), [], [other_team], SETTINGS).action == "alone"
    off = Surges(enabled=False)
    assert decide(seen(4, 3, vector=DOWN), [], [inc], off).action == "alone"


def test_a_wording_many_customers_used_joins_though_far_from_the_mean() -> None:
    members = (DOWN, DOWN, DOWN, OTHER, OTHER, OTHER, OTHER)
    inc = OpenIncident(7, "support", None, centroid(list(members)), members)
    got = decide(seen(9, 3, vector=DOWN), [], [inc], SETTINGS)
    assert (got.action, got.incident_id) == ("attach", 7)
    assert got.why == "similar wording (cosine 1.00 or more to 3 of the incident's messages)"
    lone = OpenIncident(7, "support", None, centroid(list(members)), (DOWN, OTHER, OTHER))
    assert decide(seen(9, 3, vector=DOWN), [], [lone], SETTINGS).action == "alone"


def test_a_new_group_in_another_wording_of_an_open_incident_joins_it() -> None:
    inc = OpenIncident(7, "support", None, DOWN, (DOWN,))
    recent = [seen(1, 0, vector=DOWN_ASIDE), seen(2, 1, vector=DOWN_ASIDE)]
    merging = Surges(min_tickets=3, similarity=0.9, incident_similarity=0.95, merge_similarity=0.75)
    got = decide(seen(4, 3, vector=DOWN_ASIDE), recent, [inc], merging)
    assert (got.action, got.incident_id, got.together) == ("attach", 7, (1, 2))
    assert got.why == "similar wording (3 tickets at cosine 0.80 to the incident's messages)"
    apart = merging.model_copy(update={"merge_similarity": 0.9})
    assert decide(seen(4, 3, vector=DOWN_ASIDE), recent, [inc], apart).action == "open"


def test_the_mean_of_many_members_hardly_moves_for_one_odd_ticket() -> None:
    many = joined(DOWN, 100, OTHER)
    few = joined(DOWN, 1, OTHER)
    assert many is not None and few is not None
    assert float(many @ DOWN) > 0.99 and abs(float(few @ DOWN) - 0.71) < 0.01
