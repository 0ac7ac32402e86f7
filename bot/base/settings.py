"""Secrets and endpoints, from the environment (and a ``.env`` file in the working folder).

Business rules live in ``rules.yaml`` (see :mod:`bot.domain.rules`); this is only what differs
between
deployments. Every platform base URL is a setting: that is how the sandbox and the tests point
the real client libraries at the loopback stand-ins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    bot_token: str = field(repr=False)
    api_base: str = "https://api.telegram.org"
    webhook_url: str | None = None  # set → webhook mode; unset → long polling
    webhook_secret: str | None = field(default=None, repr=False)
    poll_timeout: int = 25


@dataclass(frozen=True, slots=True)
class WhatsAppSettings:
    access_token: str = field(repr=False)
    phone_number_id: str
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)
    api_base: str = "https://graph.facebook.com/v21.0"


@dataclass(frozen=True, slots=True)
class SlackSettings:
    bot_token: str = field(repr=False)
    signing_secret: str = field(repr=False)
    api_base: str = "https://slack.com/api/"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    rules_path: Path = Path("rules.yaml")
    max_body_bytes: int = 1_048_576
    model: str = "local"  # "local" (the transformers model) or "rules" (keywords/VIP only)
    model_dir: str | None = None  # an intent head folder from `deskbot nlp train`
    encoder_dir: str | None = None  # any Hugging Face-format encoder folder
    heads_dir: str | None = None  # sentiment/anger/intent heads trained on that encoder
    tz: str = "UTC"  # DESK_TZ: the IANA zone whose days the reports count in
    telegram: TelegramSettings | None = None
    whatsapp: WhatsAppSettings | None = None
    slack: SlackSettings | None = None

    @property
    def customer_channels(self) -> list[str]:
        return [name for name, s in (("telegram", self.telegram), ("whatsapp", self.whatsapp)) if s]


def default_database_url(folder: Path | None = None) -> str:
    path = (folder or Path.cwd()) / "deskbot.db"
    return f"sqlite+aiosqlite:///{path}"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def _group(env: Mapping[str, str], label: str, names: list[str]) -> dict[str, str] | None:
    """All of ``names`` or none of them: half a configuration is an error, not a silent off."""
    present = {n: env[n] for n in names if env.get(n)}
    if not present:
        return None
    missing = [n for n in names if n not in present]
    if missing:
        raise SettingsError(f"{label} is half configured: set {', '.join(missing)}")
    return present


def desk_tz(env: Mapping[str, str] | None = None) -> ZoneInfo:
    """``DESK_TZ`` (default UTC): the zone whose days reports count in."""
    name = (os.environ if env is None else env).get("DESK_TZ") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"DESK_TZ must be an IANA time zone such as Europe/Berlin, got {name!r}"
        ) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    if env is None:
        env = os.environ
    telegram = None
    if env.get("TELEGRAM_BOT_TOKEN"):
        webhook_url = env.get("TELEGRAM_WEBHOOK_URL") or None
        secret = env.get("TELEGRAM_WEBHOOK_SECRET") or None
        if webhook_url and not secret:
            raise SettingsError(
                "TELEGRAM_WEBHOOK_URL is set: set TELEGRAM_WEBHOOK_SECRET too "
                "(1-256 characters of A-Z, a-z, 0-9, _ and -)"
            )
        telegram = TelegramSettings(
            bot_token=env["TELEGRAM_BOT_TOKEN"],
            api_base=env.get("TELEGRAM_API_BASE") or "https://api.telegram.org",
            webhook_url=webhook_url,
            webhook_secret=secret,
            poll_timeout=_int(env, "TELEGRAM_POLL_TIMEOUT", 25),
        )
    whatsapp = None
    wa = _group(
        env,
        "WhatsApp",
        [
            "WHATSAPP_ACCESS_TOKEN",
            "WHATSAPP_PHONE_NUMBER_ID",
            "WHATSAPP_APP_SECRET",
            "WHATSAPP_VERIFY_TOKEN",
        ],
    )
    if wa:
        whatsapp = WhatsAppSettings(
            access_token=wa["WHATSAPP_ACCESS_TOKEN"],
            phone_number_id=wa["WHATSAPP_PHONE_NUMBER_ID"],
            app_secret=wa["WHATSAPP_APP_SECRET"],
            verify_token=wa["WHATSAPP_VERIFY_TOKEN"],
            api_base=env.get("WHATSAPP_API_BASE") or "https://graph.facebook.com/v21.0",
        )
    slack = None
    sl = _group(env, "Slack", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"])
    if sl:
        slack = SlackSettings(
            bot_token=sl["SLACK_BOT_TOKEN"],
            signing_secret=sl["SLACK_SIGNING_SECRET"],
            api_base=env.get("SLACK_API_BASE") or "https://slack.com/api/",
        )
    model = env.get("DESK_MODEL") or "local"
    if model not in ("rules", "local"):
        raise SettingsError(f"DESK_MODEL must be 'rules' or 'local', got {model!r}")
    tz = desk_tz(env).key
    return Settings(
        database_url=env.get("DESK_DATABASE_URL") or default_database_url(),
        http_host=env.get("DESK_HTTP_HOST") or "127.0.0.1",
        http_port=_int(env, "DESK_HTTP_PORT", 8080),
        rules_path=Path(env.get("DESK_RULES") or "rules.yaml"),
        max_body_bytes=_int(env, "DESK_MAX_BODY_BYTES", 1_048_576),
        model=model,
        model_dir=env.get("DESK_INTENT_MODEL") or None,
        encoder_dir=env.get("DESK_ENCODER") or None,
        heads_dir=env.get("DESK_HEADS") or None,
        tz=tz,
        telegram=telegram,
        whatsapp=whatsapp,
        slack=slack,
    )
