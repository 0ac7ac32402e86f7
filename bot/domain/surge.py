"""Surges: deciding when new tickets are about the same thing (an incident).

Pure decisions, no database: :func:`decide` looks at a new ticket, the recent tickets of its
team and the team's open incidents, and says whether the ticket joins an incident, opens one
with the recent tickets like it, or stands alone.

Tickets are grouped by what their first messages *say*, not by the label a model gives them: an
outage reported in eight wordings gets eight different intents, but the encoder's sentence
vectors of those wordings stay close. Two tickets are *alike* when the encoder puts their first
messages at cosine similarity ``similarity`` or more, or when both name the same urgent keyword
of ``rules.yaml`` (``"outage"``, ``"system down"``: the only route left with the rules-only
model). An incident opens once ``min_tickets`` tickets alike to the newest arrived within
``window_minutes``; the recent tickets close to the new incident's mean vector join it too, so
the first messages of a surge, written before it was recognised, are not left out. A later
ticket joins an open incident when it is at ``incident_similarity`` or more to the mean vector of
the incident's tickets (the mean of many wordings stays put as members are added, one odd
message cannot drag it), or when it is at ``similarity`` or more to ``neighbours`` of the
incident's own messages (a wording many customers used, which may sit far from the mean).

Every decision says why, with the figure: "similar wording (cosine 0.71 to the incident's
messages)", "shared urgent word 'outage'". The desk side (the incident card, attaching,
answering everyone) is :mod:`bot.incidents.desk`; the defaults were chosen with
``python -m bench.surge`` on phrasing families built from the shared training data
(docs/incidents.md, "Detection, measured").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Surges(BaseModel):
    """``surges:`` in rules.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window_minutes: float = Field(default=10, gt=0, le=24 * 60)
    min_tickets: int = Field(default=5, ge=2, le=1000)
    # Cosine similarity of two first messages that makes them alike.
    similarity: float = Field(default=0.65, gt=0, le=1)
    # Cosine similarity to the mean vector of an open incident's tickets that joins it.
    incident_similarity: float = Field(default=0.62, gt=0, le=1)
    # Or: alike (``similarity``) to at least this many of the incident's tickets.
    neighbours: int = Field(default=5, ge=1, le=100)
    # A new group of alike tickets whose mean vector is this close to an open incident's joins
    # it (another wording of the same problem) instead of opening a second incident.
    merge_similarity: float = Field(default=0.58, gt=0, le=1)
    # The incident card is brought up to date, and newly attached tickets listed in its thread,
    # at most once per this many seconds (Slack allows about one post a second per channel).
    update_seconds: float = Field(default=5, ge=1, le=300)


MEMBERS = 100  # an open incident's most recent tickets that a new one is compared with


@dataclass(frozen=True)
class Seen:
    """What detection knows of a ticket: when, which team, and its signature."""

    ticket_id: int
    at: datetime
    team: str
    keyword: str | None = None  # the urgent keyword its first message matched
    vector: np.ndarray | None = None  # the encoder's unit-length embedding of the first message
    incident_id: int | None = None  # already part of an incident


@dataclass(frozen=True)
class OpenIncident:
    incident_id: int
    team: str
    keyword: str | None  # opened on a shared urgent keyword
    centroid: np.ndarray | None  # the mean of its tickets' vectors, unit length
    members: tuple[np.ndarray, ...] = ()  # its tickets' vectors (the most recent ones)


@dataclass(frozen=True)
class Decision:
    action: Literal["alone", "attach", "open"]
    incident_id: int | None = None  # attach: the incident
    # open: the recent tickets that open it with this one; attach: those that join with it
    together: tuple[int, ...] = ()
    why: str = ""
    centroid: np.ndarray | None = None  # open: the new incident's mean vector (all its tickets)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def alike(a: Seen, b: Seen, similarity: float) -> str | None:
    """Why two tickets are about the same thing, or None."""
    if a.vector is not None and b.vector is not None:
        c = cosine(a.vector, b.vector)
        if c >= similarity:
            return f"similar wording (cosine {c:.2f})"
    if a.keyword is not None and a.keyword == b.keyword:
        return f"shared urgent word '{a.keyword}'"
    return None


def belongs(new: Seen, inc: OpenIncident, settings: Surges) -> str | None:
    """Why a new ticket belongs to an open incident, or None."""
    if new.vector is not None:
        if inc.centroid is not None:
            c = cosine(new.vector, inc.centroid)
            if c >= settings.incident_similarity:
                return f"similar wording (cosine {c:.2f} to the incident's messages)"
        close = sorted(
            (c for c in (cosine(new.vector, m) for m in inc.members) if c >= settings.similarity),
            reverse=True,
        )
        if len(close) >= settings.neighbours:
            best = close[settings.neighbours - 1]
            return (
                f"similar wording (cosine {best:.2f} or more to {len(close)}"
                " of the incident's messages)"
            )
    if inc.keyword is not None and new.keyword == inc.keyword:
        return f"shared urgent word '{inc.keyword}'"
    return None


def decide(
    new: Seen, recent: Sequence[Seen], incidents: Sequence[OpenIncident], settings: Surges
) -> Decision:
    if not settings.enabled:
        return Decision("alone")
    best: tuple[float, OpenIncident, str] | None = None
    for inc in incidents:
        if inc.team != new.team:
            continue
        why = belongs(new, inc, settings)
        if why:
            score = (
                cosine(new.vector, inc.centroid)
                if new.vector is not None and inc.centroid is not None
                else 0.0
            )
            if best is None or score > best[0]:
                best = (score, inc, why)
    if best is not None:
        return Decision("attach", incident_id=best[1].incident_id, why=best[2])
    since = new.at - timedelta(minutes=settings.window_minutes)
    candidates = [
        old
        for old in recent
        if old.team == new.team
        and old.incident_id is None
        and since <= old.at <= new.at
        and old.ticket_id != new.ticket_id
    ]
    reasons = {old.ticket_id: alike(new, old, settings.similarity) for old in candidates}
    by_word = [old for old in candidates if reasons[old.ticket_id]]
    if len(by_word) + 1 < settings.min_tickets:
        return Decision("alone")
    vectors = [s.vector for s in (new, *by_word) if s.vector is not None]
    mean = centroid(vectors)
    together = {old.ticket_id for old in by_word}
    if mean is not None:
        # The first messages of the surge, alike to the group if not to the newest one.
        together |= {
            old.ticket_id
            for old in candidates
            if old.vector is not None and cosine(old.vector, mean) >= settings.incident_similarity
        }
    if mean is not None:
        # Another wording of an open incident's problem: the group joins it, no second card.
        near = [
            (cosine(mean, inc.centroid), inc)
            for inc in incidents
            if inc.team == new.team and inc.centroid is not None
        ]
        if near:
            c, inc = max(near, key=lambda pair: pair[0])
            if c >= settings.merge_similarity:
                why = (
                    f"similar wording ({len(together) + 1} tickets at cosine {c:.2f}"
                    " to the incident's messages)"
                )
                return Decision(
                    "attach", incident_id=inc.incident_id, together=tuple(sorted(together)), why=why
                )
    wording = sum(1 for old in by_word if str(reasons[old.ticket_id]).startswith("similar"))
    if mean is not None and wording * 2 >= len(by_word):
        sims = [cosine(v, mean) for v in vectors]
        why = f"similar wording (cosine {float(np.mean(sims)):.2f} to the incident's messages)"
    else:
        why = f"shared urgent word '{new.keyword}'"
    group = [s.vector for s in (new, *candidates) if s.ticket_id in together or s is new]
    everyone = centroid([v for v in group if v is not None])
    return Decision("open", together=tuple(sorted(together)), why=why, centroid=everyone)


def centroid(vectors: Sequence[np.ndarray]) -> np.ndarray | None:
    if not vectors:
        return None
    mean = np.mean(np.stack(vectors), axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm else None


def joined(old: np.ndarray | None, members: int, vector: np.ndarray | None) -> np.ndarray | None:
    """An incident's mean vector after a ticket with ``vector`` joined its ``members``
    (counted before it joined; each member weighs the same, however many there are)."""
    if vector is None:
        return old
    if old is None or members < 1:
        return centroid([vector])
    return centroid([old * members, vector])
