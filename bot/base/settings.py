"""Secrets and endpoints, from the environment (and a ``.env`` file in the working folder).

Business rules live in ``rules.yaml`` (see :mod:`bot.domain.rules`); this is only what differs
between
deployments. Every platform base URL is a setting: that is how the sandbox and the tests point
the real client libraries at the loopback stand-ins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage.crypto import DataKeyError, Keyring
from storage.crypto import install as install_keyring

# `deskbot sandbox`'s ports when none are given (--port, --standin-port).
SANDBOX_DESK_PORT = 8080
SANDBOX_STANDIN_PORT = 8081


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
INFERENCE = ("onnx", "torch")  # nlp/encoder.py reads DESK_INFERENCE itself
# storage/db.py (inline_sqlite_enabled) reads DESK_SQLITE_THREAD itself, with these words.
SQLITE_THREAD_ON = ("1", "true", "yes")
SQLITE_THREAD_OFF = ("", "0", "false", "no")
# Folders the model is read from (nlp/ reads some of them itself): a name that is not a folder
# is a typo, found before anything starts rather than when the model loads.
MODEL_FOLDERS = (
    "DESK_ENCODER",
    "DESK_HEADS",
    "DESK_LANGUAGE_HEADS",
    "DESK_INTENT_MODEL",
    "DESK_MODEL_DIR",
)


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
    # The Events API's (HTTP mode); not needed in Socket Mode, where nothing comes over HTTP.
    signing_secret: str | None = field(default=None, repr=False)
    api_base: str = "https://slack.com/api/"
    # SLACK_APP_TOKEN (xapp-…): set → Socket Mode, an outbound WebSocket (adapters/slack_socket.py)
    app_token: str | None = field(default=None, repr=False)
    # A connection that gets no message and no pong for this long is replaced.
    socket_watchdog_seconds: float = 30.0

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None


@dataclass(frozen=True, slots=True)
class MailServer:
    """One of the mailbox's servers, from ``DESK_EMAIL_IMAP_URL`` or ``DESK_EMAIL_SMTP_URL``.

    ``tls``: "implicit" (``imaps://``, ``smtps://``: TLS from the first byte) or "starttls"
    (``imap://``, ``smtp://``: upgraded with STARTTLS when the server offers it, plain text
    otherwise). The user name arrives percent-decoded (``support%40example.com``)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    tls: str  # "implicit" | "starttls"
    mailbox: str = "INBOX"  # IMAP only: the folder read

    @property
    def loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")


@dataclass(frozen=True, slots=True)
class EmailSettings:
    address: str  # DESK_EMAIL_ADDRESS: From of every mail, and how the desk knows its own
    imap: MailServer
    smtp: MailServer
    name: str = ""  # DESK_EMAIL_NAME: the display name beside the address
    max_attachment_mb: int = 20  # DESK_EMAIL_MAX_ATTACHMENT_MB, in and out
    poll_seconds: float = 30.0  # DESK_EMAIL_POLL_SECONDS: without IDLE, and between IDLEs
    # DESK_PUBLIC_URL: the desk as customers' browsers reach it (https://desk.example.com); the
    # rating links in mail point there. Unset: the rating request goes without links.
    public_url: str | None = None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def plain_text_warnings(self) -> list[str]:
        """What `deskbot check` warns about: a password that may cross a network unencrypted."""
        return [
            f"{name} is {scheme}:// to {server.host}, which is not this machine: mail and the"
            f" password travel in plain text unless the server offers STARTTLS (use"
            f" {scheme}s:// for TLS from the first byte)"
            for name, scheme, server in (
                ("DESK_EMAIL_IMAP_URL", "imap", self.imap),
                ("DESK_EMAIL_SMTP_URL", "smtp", self.smtp),
            )
            if server.tls == "starttls" and not server.loopback
        ]


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
    log_level: str = "INFO"  # DESK_LOG_LEVEL
    inference: str = "onnx"  # DESK_INFERENCE
    sqlite_thread: bool = False  # DESK_SQLITE_THREAD: SQLite's statements on aiosqlite's thread
    telegram: TelegramSettings | None = None
    whatsapp: WhatsAppSettings | None = None
    slack: SlackSettings | None = None
    email: EmailSettings | None = None
    # Encryption at rest (storage/crypto.py): DESK_DATA_KEY and the old keys still read.
    data_keys: Keyring | None = field(default=None, repr=False)

    @property
    def customer_channels(self) -> list[str]:
        configured = (("telegram", self.telegram), ("whatsapp", self.whatsapp))
        return [name for name, s in (*configured, ("email", self.email)) if s]


def default_database_url(folder: Path | None = None) -> str:
    path = (folder or Path.cwd()) / "deskbot.db"
    return f"sqlite+aiosqlite:///{path}"


def _int(
    env: Mapping[str, str], name: str, default: int, low: int = 0, high: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        within = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise SettingsError(f"{name} must be a whole number {within}, got {raw!r}")
    return value


def log_level(raw: str) -> str:
    """``DESK_LOG_LEVEL`` or ``--log-level``: one of Python's level names, any case."""
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"DESK_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def database_url(raw: str) -> str:
    """``DESK_DATABASE_URL``: SQLite through aiosqlite or PostgreSQL (through asyncpg, which
    ``postgresql://`` gets too); any other database is refused here, by name, rather than by a
    missing driver's traceback at start."""
    scheme, sep, rest = raw.partition("://")
    if not sep or not rest:
        raise SettingsError(
            "DESK_DATABASE_URL must be a URL such as sqlite+aiosqlite:///deskbot.db or"
            f" postgresql+asyncpg://user@host:5432/db, got {raw.split('@')[-1]!r}"
        )
    if scheme in ("sqlite", "sqlite+pysqlite"):
        raise SettingsError(
            f"DESK_DATABASE_URL: use sqlite+aiosqlite:// for SQLite, got {scheme}://"
        )
    if scheme not in ("sqlite+aiosqlite", "postgresql", "postgresql+asyncpg"):
        raise SettingsError(
            f"DESK_DATABASE_URL: {scheme}:// is not supported; the desk runs on SQLite"
            " (sqlite+aiosqlite:///path) or PostgreSQL (postgresql+asyncpg://user@host:5432/db)"
        )
    return raw


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name) or default
    if value not in choices:
        said = " or ".join(repr(c) for c in choices)
        raise SettingsError(f"{name} must be {said}, got {value!r}")
    return value


def _sqlite_thread(env: Mapping[str, str]) -> bool:
    raw = env.get("DESK_SQLITE_THREAD", "")
    if raw in SQLITE_THREAD_ON:
        return True
    if raw in SQLITE_THREAD_OFF:
        return False
    raise SettingsError(
        "DESK_SQLITE_THREAD must be 1 (SQLite's statements on aiosqlite's thread) or 0"
        f" (on the event loop's, the default), got {raw!r}"
    )


def _folder(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name) or None
    if raw is not None and not Path(raw).is_dir():
        said = "does not exist" if not Path(raw).exists() else "is not a folder"
        raise SettingsError(f"{name} is {raw}, which {said}")
    return raw


def require_platforms(settings: Settings) -> None:
    """What ``deskbot run`` needs on top of well-formed settings (``deskbot check`` asks the
    same): Slack, where agents work, and at least one channel customers write on."""
    if not settings.slack:
        raise SettingsError(
            "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (Events API),"
            " or SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode, no public URL) (agents work"
            " in Slack; without it no one sees the tickets)"
        )
    if not settings.customer_channels:
        raise SettingsError(
            "no customer channel is configured: set TELEGRAM_BOT_TOKEN, or the four "
            "WHATSAPP_* variables, or the three DESK_EMAIL_* ones (see the README)"
        )


def _group(env: Mapping[str, str], label: str, names: list[str]) -> dict[str, str] | None:
    """All of ``names`` or none of them: half a configuration is an error, not a silent off."""
    present = {n: env[n] for n in names if env.get(n)}
    if not present:
        return None
    missing = [n for n in names if n not in present]
    if missing:
        raise SettingsError(f"{label} is half configured: set {', '.join(missing)}")
    return present


_ADDRESS = re.compile(r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+")
_MAIL_SCHEMES = {
    "DESK_EMAIL_IMAP_URL": {"imap": ("starttls", 143), "imaps": ("implicit", 993)},
    "DESK_EMAIL_SMTP_URL": {"smtp": ("starttls", 587), "smtps": ("implicit", 465)},
}


def mail_server(name: str, raw: str) -> MailServer:
    """``imap://user:password@host:143/INBOX``, ``smtps://user:password@host:465`` and the like;
    errors name the variable and never repeat the password."""
    schemes = _MAIL_SCHEMES[name]
    example = (
        "imaps://support%40example.com:password@imap.example.com:993/INBOX"
        if "IMAP" in name
        else "smtp://support%40example.com:password@smtp.example.com:587"
    )
    try:
        url = urlsplit(raw)
        port = url.port
    except ValueError:
        raise SettingsError(f"{name} is not a URL such as {example}") from None
    if url.scheme not in schemes or not url.hostname:
        said = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(
            f"{name} must start with {said} and name a host, such as {example};"
            f" got {url.scheme or 'no scheme'}://{url.hostname or ''}"
        )
    if url.username is None or url.password is None:
        raise SettingsError(
            f"{name} needs a user name and a password (user:password@host); a user name with"
            f" @ in it is written %40, as in {example}"
        )
    tls, default_port = schemes[url.scheme]
    mailbox = unquote(url.path.lstrip("/")) or "INBOX"
    if "SMTP" in name and url.path.strip("/"):
        raise SettingsError(f"{name} takes no path (a mailbox is for DESK_EMAIL_IMAP_URL)")
    return MailServer(
        host=url.hostname,
        port=port or default_port,
        user=unquote(url.username),
        password=unquote(url.password),
        tls=tls,
        mailbox=mailbox,
    )


def _email(env: Mapping[str, str]) -> EmailSettings | None:
    group = _group(
        env, "Email", ["DESK_EMAIL_ADDRESS", "DESK_EMAIL_IMAP_URL", "DESK_EMAIL_SMTP_URL"]
    )
    if group is None:
        return None
    address = group["DESK_EMAIL_ADDRESS"].strip()
    if not _ADDRESS.fullmatch(address):
        raise SettingsError(
            f"DESK_EMAIL_ADDRESS must be an address such as support@example.com, got {address!r}"
        )
    return EmailSettings(
        address=address.lower(),
        imap=mail_server("DESK_EMAIL_IMAP_URL", group["DESK_EMAIL_IMAP_URL"]),
        smtp=mail_server("DESK_EMAIL_SMTP_URL", group["DESK_EMAIL_SMTP_URL"]),
        name=(env.get("DESK_EMAIL_NAME") or "").strip(),
        max_attachment_mb=_int(env, "DESK_EMAIL_MAX_ATTACHMENT_MB", 20, 1, 1024),
        poll_seconds=_int(env, "DESK_EMAIL_POLL_SECONDS", 30, 1, 1740),
        public_url=_public_url(env),
    )


def _public_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("DESK_PUBLIC_URL") or "").strip().rstrip("/")
    if not raw:
        return None
    url = urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SettingsError(
            f"DESK_PUBLIC_URL must be the desk's web address, such as https://desk.example.com;"
            f" got {raw!r}"
        )
    return raw


def desk_tz(env: Mapping[str, str] | None = None) -> ZoneInfo:
    """``DESK_TZ`` (default UTC): the zone whose days reports count in."""
    name = (os.environ if env is None else env).get("DESK_TZ") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"DESK_TZ must be an IANA time zone such as Europe/Berlin, got {name!r}"
        ) from None


def _slack(env: Mapping[str, str]) -> SlackSettings | None:
    """Socket Mode when SLACK_APP_TOKEN is set (no signing secret needed), else the Events API
    with SLACK_SIGNING_SECRET; SLACK_BOT_TOKEN either way."""
    bot, secret, app = (env.get(n) or None for n in ("SLACK_BOT_TOKEN", *SLACK_INBOUND))
    if not (bot or secret or app):
        return None
    if not bot:
        raise SettingsError("Slack is half configured: set SLACK_BOT_TOKEN")
    if not (secret or app):
        raise SettingsError(
            "Slack is half configured: set SLACK_SIGNING_SECRET (Events API at /slack/events)"
            " or SLACK_APP_TOKEN (Socket Mode, no public URL)"
        )
    if app is not None and not app.startswith("xapp-"):
        # Never the value itself: it is a secret even when it is the wrong one.
        raise SettingsError(
            "SLACK_APP_TOKEN must be an app-level token (it starts with xapp-; make one with"
            " the connections:write scope under Basic Information in the app's settings)"
        )
    return SlackSettings(
        bot_token=bot,
        signing_secret=secret,
        api_base=env.get("SLACK_API_BASE") or "https://slack.com/api/",
        app_token=app,
        socket_watchdog_seconds=_int(env, "SLACK_SOCKET_WATCHDOG_SECONDS", 30, 2, 600),
    )


SLACK_INBOUND = ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
# Secret settings: each also read from a file named by NAME_FILE (the container and systemd
# credentials convention). Named here, and any later DESK_… setting whose name ends so.
SECRETS = (
    "DESK_DATABASE_URL",  # holds the database password
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_WEBHOOK_SECRET",
    "WHATSAPP_ACCESS_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "DESK_EMAIL_IMAP_URL",  # hold the mailbox's password
    "DESK_EMAIL_SMTP_URL",
    "DESK_DATA_OLD_KEYS",  # DESK_DATA_KEY is one by its suffix
)
SECRET_SUFFIXES = ("_TOKEN", "_SECRET", "_PASSWORD", "_KEY")


def is_secret(name: str) -> bool:
    return name in SECRETS or name.endswith(SECRET_SUFFIXES)


def with_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with each secret ``NAME`` read from the file ``NAME_FILE`` names (one trailing
    newline, as ``echo`` and editors leave it, is stripped). Both set is an error: which one
    wins would be a guess."""
    resolved = dict(env)
    for key, path in env.items():
        name = key.removesuffix("_FILE")
        if name == key or not is_secret(name):
            continue
        if not path:  # empty is unset, as for every other setting
            continue
        if env.get(name):
            raise SettingsError(f"both {name} and {key} are set: keep one")
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SettingsError(f"{key}: {path} is not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            raise SettingsError(f"{key}: {path} is empty")
        resolved[name] = value
    return resolved


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = with_secret_files(os.environ if env is None else env)
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
            poll_timeout=_int(env, "TELEGRAM_POLL_TIMEOUT", 25, 0, 50),
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
    slack = _slack(env)
    model = _choice(env, "DESK_MODEL", ("local", "rules"), "local")
    folders = {name: _folder(env, name) for name in MODEL_FOLDERS}
    tz = desk_tz(env).key
    keys = _data_keys(env)
    # Every command that loads the settings reads and writes the database with this keyring.
    install_keyring(keys)
    return Settings(
        database_url=database_url(env.get("DESK_DATABASE_URL") or default_database_url()),
        http_host=env.get("DESK_HTTP_HOST") or "127.0.0.1",
        http_port=_int(env, "DESK_HTTP_PORT", 8080, 1, 65535),
        rules_path=Path(env.get("DESK_RULES") or "rules.yaml"),
        max_body_bytes=_int(env, "DESK_MAX_BODY_BYTES", 1_048_576, 1),
        model=model,
        model_dir=folders["DESK_INTENT_MODEL"],
        encoder_dir=folders["DESK_ENCODER"],
        heads_dir=folders["DESK_HEADS"],
        tz=tz,
        log_level=log_level(env.get("DESK_LOG_LEVEL") or "INFO"),
        inference=_choice(env, "DESK_INFERENCE", INFERENCE, "onnx"),
        sqlite_thread=_sqlite_thread(env),
        telegram=telegram,
        whatsapp=whatsapp,
        slack=slack,
        email=_email(env),
        data_keys=keys,
    )


def _data_keys(env: Mapping[str, str]) -> Keyring | None:
    """DESK_DATA_KEY, and DESK_DATA_OLD_KEYS (comma-separated, or one a line from its _FILE)."""
    key = (env.get("DESK_DATA_KEY") or "").strip()
    old = [k.strip() for k in (env.get("DESK_DATA_OLD_KEYS") or "").replace("\n", ",").split(",")]
    if not key:
        if any(old):
            raise SettingsError("DESK_DATA_OLD_KEYS is set without DESK_DATA_KEY: set the key")
        return None
    try:
        return Keyring.of(key, [k for k in old if k])
    except DataKeyError as exc:
        raise SettingsError(str(exc)) from None
