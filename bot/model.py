"""The local model behind the :class:`bot.domain.classifier.Classifier` protocol
(DESK_MODEL=local)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.base.settings import Settings
from bot.domain.classifier import Classification
from bot.domain.rules import Rules
from nlp.priority import PriorityRules, Signals, decide

if TYPE_CHECKING:
    from nlp.encoder import Encoder
    from nlp.service import TextAnalyser


class ModelClassifier:
    def __init__(self, analyser: TextAnalyser, rules: PriorityRules) -> None:
        self._analyser = analyser
        self._rules = rules

    @classmethod
    async def create(cls, settings: Settings, rules: Rules) -> ModelClassifier:
        from nlp.service import TextAnalyser

        # Loading reads ~90 MB of weights: off the event loop, once.
        analyser = await asyncio.to_thread(
            TextAnalyser.load,
            encoder_dir=settings.encoder_dir,
            intent_dir=settings.model_dir,
            heads_dir=settings.heads_dir,
            extra_intents=rules.intents or None,
            spoken=rules.spoken_languages(),
        )
        await analyser.start()
        return cls(analyser, rules.priority)

    async def classify(
        self, text: str, *, customer_key: str, recent_tickets: int
    ) -> Classification:
        signals = Signals(text=text, customer_key=customer_key, recent_tickets=recent_tickets)
        if not text.strip():  # a photo without a caption: nothing for the model to read
            d = decide(self._rules, signals)
            return Classification(d.priority, d.reasons, self._analyser.version)
        a = await self._analyser.analyse(text)
        d = decide(
            self._rules,
            Signals(
                text=text,
                customer_key=customer_key,
                recent_tickets=recent_tickets,
                intent=a.intent,
                intent_confidence=a.intent_confidence,
                sentiment=a.sentiment,
                sentiment_scores=a.sentiment_scores,
                anger=a.anger,
            ),
        )
        # What the model did not read (heads not applied to this language) is left out, not
        # stored as a score: the card then says "not applied (zh)".
        details = {k: v for k, v in a.as_dict().items() if v is not None and k != "model_version"}
        return Classification(d.priority, d.reasons, a.model_version, details, a.vector)

    @property
    def encoder(self) -> Encoder:
        """The encoder the model runs; the knowledge base embeds with the same one."""
        return self._analyser.encoder

    async def close(self) -> None:
        await self._analyser.close()
