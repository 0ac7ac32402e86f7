"""Secrets from files (NAME_FILE, the container and systemd credentials convention), Slack's
Socket Mode settings, and `deskbot check`, which never prints a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.base.settings import SECRETS, SettingsError, load_settings, with_secret_files

from .test_cli_check import deskbot

BASE = {"TELEGRAM_BOT_TOKEN": "123:abc"}


def _file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_every_secret_setting_reads_its_file(tmp_path: Path) -> None:
    env = {f"{name}_FILE": _file(tmp_path, name, f"value-of-{name}\n") for name in SECRETS}
    resolved = with_secret_files(env)
    for name in SECRETS:
        assert resolved[name] == f"value-of-{name}"  # the trailing newline is stripped


def test_secrets_from_files_make_the_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN_FILE": _file(tmp_path, "tg", "123:from-file\n"),
            "SLACK_BOT_TOKEN_FILE": _file(tmp_path, "bot", "xoxb-from-file\n"),
            "SLACK_APP_TOKEN_FILE": _file(tmp_path, "app", "xapp-1-from-file"),
            "DESK_DATABASE_URL_FILE": _file(
                tmp_path, "db", "postgresql+asyncpg://desk:pw@db:5432/desk\n"
            ),
        }
    )
    assert settings.telegram is not None and settings.telegram.bot_token == "123:from-file"
    assert settings.slack is not None
    assert settings.slack.bot_token == "xoxb-from-file"
    assert settings.slack.app_token == "xapp-1-from-file"
    assert settings.database_url == "postgresql+asyncpg://desk:pw@db:5432/desk"
    # Only one newline goes: a secret that really ends in spaces keeps them.
    kept = load_settings({**BASE, "TELEGRAM_WEBHOOK_SECRET_FILE": _file(tmp_path, "s", "ab \n\n")})
    assert kept.telegram is not None


def test_both_set_or_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = _file(tmp_path, "bot", "xoxb-2\n")
    with pytest.raises(SettingsError, match="both SLACK_BOT_TOKEN and SLACK_BOT_TOKEN_FILE"):
        load_settings({**BASE, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_BOT_TOKEN_FILE": path})
    missing = str(tmp_path / "nope")
    with pytest.raises(SettingsError, match=f"SLACK_BOT_TOKEN_FILE: cannot read {missing}"):
        load_settings({**BASE, "SLACK_BOT_TOKEN_FILE": missing})
    empty = _file(tmp_path, "empty", "\n")
    with pytest.raises(SettingsError, match=r"SLACK_BOT_TOKEN_FILE: .* is empty"):
        load_settings({**BASE, "SLACK_BOT_TOKEN_FILE": empty})
    # Not a secret: no _FILE form (DESK_HTTP_PORT_FILE is just an unknown variable).
    assert with_secret_files({"DESK_HTTP_PORT_FILE": missing}) == {"DESK_HTTP_PORT_FILE": missing}


def test_socket_mode_needs_no_signing_secret() -> None:
    settings = load_settings({**BASE, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1-a"})
    assert settings.slack is not None and settings.slack.socket_mode
    assert settings.slack.signing_secret is None
    assert settings.slack.socket_watchdog_seconds == 30
    http = load_settings({**BASE, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"})
    assert http.slack is not None and not http.slack.socket_mode
    with pytest.raises(SettingsError, match=r"set SLACK_SIGNING_SECRET .* or SLACK_APP_TOKEN"):
        load_settings({**BASE, "SLACK_BOT_TOKEN": "xoxb-1"})
    with pytest.raises(SettingsError, match="set SLACK_BOT_TOKEN"):
        load_settings({**BASE, "SLACK_APP_TOKEN": "xapp-1-a"})
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN must be an app-level token") as bad:
        load_settings({**BASE, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-oops-42"})
    assert "oops" not in str(bad.value)  # not even a wrong token is repeated
    with pytest.raises(SettingsError, match="SLACK_SOCKET_WATCHDOG_SECONDS"):
        load_settings(
            {
                **BASE,
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_APP_TOKEN": "xapp-1",
                "SLACK_SOCKET_WATCHDOG_SECONDS": "1",
            }
        )


SECRET_VALUES = {
    "TELEGRAM_BOT_TOKEN": "123:tg-secret-TG1",
    "SLACK_BOT_TOKEN": "xoxb-secret-SB2",
    "SLACK_APP_TOKEN": "xapp-secret-SA3",
    "SLACK_SIGNING_SECRET": "signing-secret-SS4",
    "WHATSAPP_ACCESS_TOKEN": "wa-secret-WA5",
    "WHATSAPP_APP_SECRET": "wa-secret-WS6",
    "WHATSAPP_VERIFY_TOKEN": "wa-secret-WV7",
    # The mailbox's URLs hold its password (here for a server that is not this machine, so
    # check also warns about plain text: the warning names the host, never the password).
    "DESK_EMAIL_IMAP_URL": "imap://support%40example.com:mail-secret-EI9@mail.example.com/INBOX",
    "DESK_EMAIL_SMTP_URL": "smtp://support%40example.com:mail-secret-ES10@mail.example.com:587",
}


def _leaks(text: str) -> list[str]:
    secrets = ("dbpass-DB8", "mail-secret-EI9", "mail-secret-ES10")
    return [v for v in (*SECRET_VALUES.values(), *secrets) if v in text]


def test_check_never_prints_a_secret(tmp_path: Path) -> None:
    """Neither when all is well (secrets from the environment and from files) nor when it
    refuses a setting: what check prints gets pasted into tickets and chats."""
    env = {
        **{f"{k}_FILE": _file(tmp_path, k, v + "\n") for k, v in SECRET_VALUES.items()},
        "WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
        "DESK_EMAIL_ADDRESS": "support@example.com",
        "SLACK_SIGNING_SECRET": "",
        "TELEGRAM_BOT_TOKEN": "",
        "SLACK_BOT_TOKEN": "",
    }
    ran = deskbot("check", env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "slack: Socket Mode" in ran.stdout
    assert "mail.example.com" in ran.stdout + ran.stderr  # the plain-text warning
    assert _leaks(ran.stdout + ran.stderr) == []
    refusals = [
        (
            {**env, "SLACK_APP_TOKEN_FILE": "", "SLACK_APP_TOKEN": "xoxb-secret-SA3"},
            "SLACK_APP_TOKEN must be an app-level token",
        ),
        (
            {**env, "SLACK_BOT_TOKEN": "xoxb-secret-SB2"},
            "both SLACK_BOT_TOKEN and SLACK_BOT_TOKEN_FILE are set",
        ),
        (
            {**env, "DESK_DATABASE_URL": "postgresql://desk:dbpass-DB8@127.0.0.1:9/desk"},
            "cannot reach the database at postgresql+asyncpg://desk:***@127.0.0.1:9/desk",
        ),
        (
            {**env, "DESK_DATABASE_URL": "mysql://desk:dbpass-DB8@127.0.0.1:9/desk"},
            "mysql:// is not supported",
        ),
        ({**env, "WHATSAPP_PHONE_NUMBER_ID": ""}, "WhatsApp is half configured"),
    ]
    for bad, said in refusals:
        ran = deskbot("check", bad, tmp_path)
        assert ran.returncode == 2, ran.stdout
        assert ran.stderr.startswith("deskbot: ") and said in ran.stderr, ran.stderr
        assert _leaks(ran.stdout + ran.stderr) == [], ran.stderr
