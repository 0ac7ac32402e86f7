"""An inbox event with what was worked out for it before its transaction (the model's
classification, the detected language, a status lookup, knowledge-base hits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.domain.classifier import Classification
from bot.domain.customer_requests import StatusRequest
from bot.domain.events import Event
from nlp.kb import Hit


@dataclass
class Prepared:
    event: Event
    cls: Classification | None = None
    detected: str | None = None
    lookup: StatusRequest | None = None
    hits: list[Hit] = field(default_factory=list)
    # A supervisor's report worked out in a worker process (bot/reports/offloop.py), or None.
    report: Any = None
