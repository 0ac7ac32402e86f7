"""Surges: deciding when new tickets are about the same thing (an incident).

Pure decisions, no database: :func:`decide` looks at a new ticket, the recent tickets of its
team and the team's open incidents, and says whether the ticket joins an incident, opens one
with the recent tickets like it, or stands alone. Two tickets are *alike* when they share an
urgent keyword from ``rules.yaml`` (``"outage"``, ``"system down"``), or when they have the same
intent and the local encoder puts their first messages close together (cosine similarity at or
above ``similarity``). An incident is opened once ``min_tickets`` alike tickets arrived within
``window_minutes``.

The desk side (the incident card, attaching, answering everyone) is :mod:`bot.incidents.desk`. The
defaults were picked from ``python -m bench.surge`` (README, "Surges and incidents"): at
similarity 0.7 and 5 tickets no unrelated message was attached on either burst measured.
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
    similarity: float = Field(default=0.7, gt=0, le=1)
    # The incident card is brought up to date, and newly attached tickets listed in its thread,
    # at most once per this many seconds (Slack allows about one post a second per channel).
    update_seconds: float = Field(default=5, ge=1, le=300)


@dataclass(frozen=True)
class Seen:
    """What detection knows of a ticket: when, which team, and its signature."""

    ticket_id: int
    at: datetime
    team: str
    keyword: str | None = None  # the urgent keyword its first message matched
    intent: str | None = None  # the model's intent, when confident
    vector: np.ndarray | None = None  # the encoder's unit-length embedding of the first message
    incident_id: int | None = None  # already part of an incident


@dataclass(frozen=True)
class OpenIncident:
    incident_id: int
    team: str
    keyword: str | None
    intent: str | None
    centroid: np.ndarray | None  # the mean of its tickets' vectors, unit length


@dataclass(frozen=True)
class Decision:
    action: Literal["alone", "attach", "open"]
    incident_id: int | None = None  # attach: the incident
    together: tuple[int, ...] = ()  # open: the recent tickets that open it with this one
    why: str = ""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def alike(
    keyword_a: str | None,
    intent_a: str | None,
    vector_a: np.ndarray | None,
    keyword_b: str | None,
    intent_b: str | None,
    vector_b: np.ndarray | None,
    similarity: float,
) -> str | None:
    """Why two signatures are about the same thing, or None."""
    if keyword_a is not None and keyword_a == keyword_b:
        return f"keyword '{keyword_a}'"
    if (
        intent_a is not None
        and intent_a == intent_b
        and vector_a is not None
        and vector_b is not None
        and cosine(vector_a, vector_b) >= similarity
    ):
        return f"intent {intent_a}, similar wording"
    return None


def decide(
    new: Seen, recent: Sequence[Seen], incidents: Sequence[OpenIncident], settings: Surges
) -> Decision:
    if not settings.enabled:
        return Decision("alone")
    for inc in incidents:
        if inc.team != new.team:
            continue
        why = alike(
            new.keyword,
            new.intent,
            new.vector,
            inc.keyword,
            inc.intent,
            inc.centroid,
            settings.similarity,
        )
        if why:
            return Decision("attach", incident_id=inc.incident_id, why=why)
    since = new.at - timedelta(minutes=settings.window_minutes)
    together: list[int] = []
    reason = ""
    for old in recent:
        if old.team != new.team or old.incident_id is not None or not since <= old.at <= new.at:
            continue
        if old.ticket_id == new.ticket_id:
            continue
        why = alike(
            new.keyword,
            new.intent,
            new.vector,
            old.keyword,
            old.intent,
            old.vector,
            settings.similarity,
        )
        if why:
            together.append(old.ticket_id)
            reason = reason or why
    if len(together) + 1 >= settings.min_tickets:
        return Decision("open", together=tuple(sorted(together)), why=reason)
    return Decision("alone")


def centroid(vectors: Sequence[np.ndarray]) -> np.ndarray | None:
    if not vectors:
        return None
    mean = np.mean(np.stack(vectors), axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm else None
