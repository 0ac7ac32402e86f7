"""How a ticket gets its priority. The dispatcher sees only the :class:`Classifier` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from nlp.priority import PriorityRules, Signals, decide


@dataclass(frozen=True, slots=True)
class Classification:
    priority: str
    reasons: tuple[str, ...]
    model_version: str
    details: dict[str, Any] = field(default_factory=dict)  # intent, sentiment, … if known
    vector: tuple[float, ...] | None = None  # the encoder's sentence vector, when it ran


class Classifier(Protocol):
    async def classify(
        self, text: str, *, customer_key: str, recent_tickets: int
    ) -> Classification: ...

    async def close(self) -> None: ...


class RulesClassifier:
    """Keyword, VIP and repeat-contact rules from rules.yaml; no model."""

    version = "rules-1"

    def __init__(self, rules: PriorityRules) -> None:
        self._rules = rules

    async def classify(
        self, text: str, *, customer_key: str, recent_tickets: int
    ) -> Classification:
        decision = decide(
            self._rules,
            Signals(text=text, customer_key=customer_key, recent_tickets=recent_tickets),
        )
        return Classification(decision.priority, decision.reasons, self.version)

    async def close(self) -> None:
        return None
