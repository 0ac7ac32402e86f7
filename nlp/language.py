"""The language of a customer's message, detected offline.

lingua-language-detector does the detection: it is offline, accurate on short text (which is
what support messages are), and its models ship inside the wheel. The detector knows only the
languages below, because each one it knows costs memory and adds a way to be wrong; they are
the languages of the labelled data in ``../shared/data`` plus the common ones customers write.

Low-accuracy mode (trigrams only) keeps the detector at ~40 MB resident instead of ~330 MB
for the full models; a message is given a language only when the detector is confident
(``MIN_CONFIDENCE``), so "ok" or "thanks" never flips a customer's language.
"""

from __future__ import annotations

import re
from functools import lru_cache

from lingua import Language, LanguageDetector, LanguageDetectorBuilder

# ISO 639-1 codes, as stored on customers and tickets.
KNOWN: dict[Language, str] = {
    Language.ENGLISH: "en",
    Language.CHINESE: "zh",
    Language.SPANISH: "es",
    Language.RUSSIAN: "ru",
    Language.FRENCH: "fr",
    Language.GERMAN: "de",
    Language.PORTUGUESE: "pt",
    Language.ITALIAN: "it",
    Language.ARABIC: "ar",
    Language.HINDI: "hi",
    Language.JAPANESE: "ja",
    Language.KOREAN: "ko",
}

# The share of confidence the best language needs before the desk believes it. Chosen on the
# train splits with ``python -m bench.language`` (a wrong language counted as twice as bad as
# none, which falls back to the platform's hint or the default): 0.6 in low-accuracy mode.
# On the validation splits: English support messages 97.8 % right / 1.8 % wrong / 0.4 %
# declined, Chinese and Russian 100 %, Spanish 94.8 / 3.4 / 1.9 (README, "Customers help
# themselves"). High-accuracy mode would cut the wrong share to ~0.3 % for ~200 MB more.
MIN_CONFIDENCE = 0.6
# Fewer letters than this say too little about a language (digits and emoji are not letters).
MIN_LETTERS = 3

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


@lru_cache(maxsize=1)
def detector() -> LanguageDetector:
    return (
        LanguageDetectorBuilder.from_languages(*KNOWN)
        .with_low_accuracy_mode()
        .with_preloaded_language_models()
        .build()
    )


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the language ``text`` is written in, or None when unsure."""
    if len(_LETTER.findall(text)) < MIN_LETTERS:
        return None
    values = detector().compute_language_confidence_values(text)
    if not values:
        return None
    best = values[0]
    if best.value < MIN_CONFIDENCE:
        return None
    return KNOWN[best.language]


def confidence(text: str, code: str) -> float:
    """How sure the detector is that ``text`` is in the language ``code`` (0..1)."""
    language = next((lang for lang, c in KNOWN.items() if c == code), None)
    if language is None:
        return 0.0
    return float(detector().compute_language_confidence(text, language))
