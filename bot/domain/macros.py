"""Macros: canned replies from ``macros:`` in rules.yaml, in the customer's language.

A macro has a name (shown in the Reply modal's picker), its text per language with the
placeholders ``{customer_name}``, ``{ticket}`` and ``{agent_name}``, and optional actions done
when a reply made with it is sent: a status, tags added, a priority. Which macro was used is a
ticket event (kind ``macro``), so reports can count them.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MACRO_PLACEHOLDERS = frozenset({"customer_name", "ticket", "agent_name"})
MAX_MACROS = 100  # one Slack menu's worth of options


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MacroActions(_Strict):
    status: Literal["open", "pending", "resolved"] | None = None
    add_tags: tuple[str, ...] = ()
    priority: Literal["urgent", "high", "normal", "low"] | None = None


class Macro(_Strict):
    name: str = Field(min_length=1, max_length=75)  # a Slack option's text
    text: dict[str, str] = Field(min_length=1)  # language tag → text
    actions: MacroActions = Field(default_factory=MacroActions)

    @field_validator("text")
    @classmethod
    def _known_placeholders(cls, value: dict[str, str]) -> dict[str, str]:
        for language, text in value.items():
            if not text.strip():
                raise ValueError(f"{language}: the text is empty")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as exc:
                raise ValueError(f"{language}: {exc} (write {{{{ and }}}} for braces)") from None
            unknown = fields - MACRO_PLACEHOLDERS
            if unknown:
                known = ", ".join("{" + p + "}" for p in sorted(MACRO_PLACEHOLDERS))
                raise ValueError(
                    f"{language}: unknown placeholder "
                    + ", ".join("{" + u + "}" for u in sorted(unknown))
                    + f" (known: {known})"
                )
        return {k.lower(): v for k, v in value.items()}

    def text_for(self, language: str | None, default_language: str = "en") -> str:
        """The exact tag, then its primary subtag, then the default language, then English,
        then the first one written."""
        tags = []
        if language:
            tags += [language.lower(), language.lower().split("-")[0]]
        tags += [default_language, "en"]
        for tag in tags:
            if tag in self.text:
                return self.text[tag]
        return next(iter(self.text.values()))


def fill(text: str, values: Mapping[str, str]) -> str:
    """The placeholders filled in (validated at start-up, so only known ones are there)."""
    return text.format_map({k: values.get(k, "") for k in MACRO_PLACEHOLDERS})


def find(macros: tuple[Macro, ...], name: str | None) -> Macro | None:
    return next((m for m in macros if m.name == name), None) if name else None
