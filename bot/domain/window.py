"""WhatsApp's customer-service window and the approved templates that pass outside it.

WhatsApp lets a business send free-form messages only within ``window_hours`` (24) of the
customer's last message; after that the Cloud API takes only message templates approved in
WhatsApp Manager and refuses anything else with error 131047. ``rules.yaml``'s ``whatsapp:``
section names the templates the desk may use (README, "WhatsApp beyond 24 hours"):

* ``reply_waiting``: sent when an agent's reply cannot go free-form; the reply itself is kept
  and delivered when the customer writes again (``bot/window``).
* ``rating_request``: the rating prompt after a resolve outside the window.

This module is pure: the settings, when a window closes, and a template's body parameters.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.domain.mrkdwn import slack_date

# What a template's body parameters may be, in the order the template's {{1}}, {{2}}… use them.
Parameter = Literal["ticket_number", "customer_name", "agent_name"]
TemplatePurpose = Literal["reply_waiting", "rating_request"]


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The template's name as approved in WhatsApp Manager (lowercase, digits and underscores).
    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    # The desk's language → the template's language code there ({en: en_US, zh: zh_CN}).
    languages: dict[str, str] = Field(min_length=1)
    parameters: tuple[Parameter, ...] = ()

    @field_validator("languages")
    @classmethod
    def _lower_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return {str(k).lower(): str(v) for k, v in value.items()}

    def language_for(self, language: str | None, default: str) -> str | None:
        """The template language for a customer: theirs, its primary subtag, then the desk's
        default language; None when the template has none of them."""
        for tag in (language, (language or "").split("-")[0], default):
            if tag and tag.lower() in self.languages:
                return self.languages[tag.lower()]
        return None


class WhatsAppRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_hours: float = Field(default=24, gt=0, le=24 * 7)
    templates: dict[TemplatePurpose, Template] = Field(default_factory=dict)


def closes_at(last_inbound: datetime | None, rules: WhatsAppRules) -> datetime | None:
    """When the window opened by the customer's last message closes; None when the desk does
    not know when they last wrote (a customer from before it recorded it)."""
    if last_inbound is None:
        return None
    return last_inbound + timedelta(hours=rules.window_hours)


def is_closed(last_inbound: datetime | None, rules: WhatsAppRules, now: datetime) -> bool:
    """Known to be closed. Unknown counts as open: the send goes, and Meta's 131047 says
    otherwise if it must (the desk then takes the same path as when it knew)."""
    closing = closes_at(last_inbound, rules)
    return closing is not None and now >= closing


def parameter_values(
    template: Template, *, ticket_number: int, customer_name: str, agent_name: str
) -> tuple[str, ...]:
    """The body parameters in the template's order. WhatsApp refuses an empty parameter, so a
    missing name is replaced by a neutral word rather than left blank."""
    values: dict[Parameter, str] = {
        "ticket_number": str(ticket_number),
        "customer_name": customer_name.strip() or "there",
        "agent_name": agent_name.strip() or "our team",
    }
    return tuple(values[p] for p in template.parameters)


# Graph error codes about the window and templates (protocols.md; Meta's error code reference).
WINDOW_CLOSED_CODE = 131047  # "Re-engagement message": more than 24 h since the customer wrote
TEMPLATE_ERROR_CODES = frozenset(
    {
        132000,  # number of parameters does not match the template
        132001,  # template does not exist (name or language)
        132005,  # translated text too long
        132007,  # content policy
        132012,  # parameter format does not match
        132015,  # template is paused
        132016,  # template is disabled
    }
)


def window_closed_error(error: str | None) -> bool:
    """Does a failed status webhook's error ("131047 Re-engagement message") say the window
    was closed?"""
    return (error or "").strip().startswith(str(WINDOW_CLOSED_CODE))


def window_note(
    last_inbound: datetime | None, rules: WhatsAppRules, now: datetime, held: int = 0
) -> str | None:
    """What the card (and App Home, and the Reply modal) says of a WhatsApp customer's window:
    until when a reply goes free-form, or what happens to one now. None when the desk does not
    know when the customer last wrote."""
    closing = closes_at(last_inbound, rules)
    if closing is None:
        return None
    template = rules.templates.get("reply_waiting")
    waiting = f" · ⏳ {held} {'reply' if held == 1 else 'replies'} waiting" if held else ""
    if now < closing:
        after = (
            f"then as the template *{template.name}*"
            if template
            else "then the customer can't be reached until they write"
        )
        return (
            f"💬 WhatsApp window open until {slack_date(closing)}: replies go as written, {after}"
        )
    if template:
        return (
            f"🔒 WhatsApp window closed {slack_date(closing)}: a reply goes as the template"
            f" *{template.name}* and is delivered when the customer answers{waiting}"
        )
    return (
        f"🔒 WhatsApp window closed {slack_date(closing)}: the customer can't be reached until"
        f" they write (no reply_waiting template in rules.yaml); replies wait{waiting}"
    )
