"""Configuration errors say exactly what to fix; priority rules say why they chose."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.base.settings import SettingsError, load_settings
from bot.cli import main
from bot.domain.rules import Retention, Roles, RulesError, load_rules, parse_rules
from bot.domain.window import WhatsAppRules
from nlp.priority import PriorityRules, Signals, decide

ROOT = Path(__file__).parent.parent


def test_shipped_rules_equal_the_defaults() -> None:
    # rules.yaml spells out every default; if they drift apart the README lies about one.
    # Its teams, routing, calendars, SLA, roles, tags, macros and WhatsApp templates are an
    # example (the sandbox's), not defaults.
    shipped = load_rules(ROOT / "rules.yaml")
    defaults = parse_rules({"version": 1})
    assert shipped.teams and shipped.routing and shipped.sla and "office" in shipped.calendars
    assert shipped.roles.supervisors and shipped.retention.raw_days == 30
    example = {
        "teams": {},
        "routing": (),
        "calendars": defaults.calendars,
        "sla": None,
        "roles": Roles(),
        "retention": Retention(),
        "tags": (),
        "macros": (),
        "whatsapp": WhatsAppRules(window_hours=shipped.whatsapp.window_hours),
    }
    assert shipped.whatsapp.templates["reply_waiting"].name == "ticket_update"
    assert shipped.model_copy(update=example) == defaults


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"version": 1, "slack": {"chanel": "C1"}}, "slack.chanel: Extra inputs are not permitted"),
        ({"version": 2}, "version: Input should be less than or equal to 1"),
        ({}, "version: Field required"),
        ({"version": 1, "tickets": {"reopen_window_hours": -1}}, "tickets.reopen_window_hours"),
        (
            {"version": 1, "texts": {"languages": {"en": {"ack": "#{tiket}"}}}},
            "texts.languages.en.ack: Value error, unknown placeholder {tiket}",
        ),
        (
            {"version": 1, "priority": {"keywords": [{"match": ["x"], "priority": "asap"}]}},
            "priority.keywords.0.priority",
        ),
    ],
)
def test_bad_rules_name_the_field(data: dict[str, object], path: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules(data)
    assert path in str(err.value)


def test_bad_rules_file_stops_startup_with_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\ntexts:\n  default_language: fr\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DESK_RULES", str(bad))
    assert main(["check"]) == 2
    assert "texts: Value error, default_language 'fr' has no entry" in capsys.readouterr().err


def test_missing_and_half_settings_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN"):
        load_settings({"WHATSAPP_ACCESS_TOKEN": "t", "WHATSAPP_PHONE_NUMBER_ID": "1"})
    with pytest.raises(SettingsError, match="set SLACK_SIGNING_SECRET"):
        load_settings({"SLACK_BOT_TOKEN": "xoxb-1"})
    with pytest.raises(SettingsError, match="TELEGRAM_WEBHOOK_SECRET"):
        load_settings({"TELEGRAM_BOT_TOKEN": "1:a", "TELEGRAM_WEBHOOK_URL": "https://x/"})
    with pytest.raises(SettingsError, match="DESK_HTTP_PORT must be a whole number"):
        load_settings({"DESK_HTTP_PORT": "eighty"})


def test_run_without_any_channel_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DESK_RULES", str(ROOT / "rules.yaml"))
    assert main(["run"]) == 2
    assert "set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    assert main(["run"]) == 2
    assert "set TELEGRAM_BOT_TOKEN, or the four WHATSAPP_* variables" in capsys.readouterr().err


def test_secrets_never_appear_in_settings_repr() -> None:
    s = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123:SECRET",
            "SLACK_BOT_TOKEN": "xoxb-S",
            "SLACK_SIGNING_SECRET": "Q",
        }
    )
    assert "SECRET" not in repr(s) and "xoxb-S" not in repr(s)


def test_priority_takes_the_highest_rule_and_lists_every_reason() -> None:
    rules = PriorityRules.model_validate({"vip": {"customers": ["telegram:7"]}})
    d = decide(rules, Signals(text="Outage! I want a refund", customer_key="telegram:7"))
    assert d.priority == "urgent"
    assert d.reasons == (
        "keyword 'outage' → urgent",
        "keyword 'refund' → high",
        "VIP customer → high",
    )
    calm = decide(rules, Signals(text="How do I change my address?"))
    assert calm.priority == "normal" and calm.reasons == ("no rule fired: default normal",)
    assert decide(rules, Signals(text="I have been charged twice")).priority == "high"
    assert decide(rules, Signals(text="my Outage report", recent_tickets=3)).reasons[1] == (
        "repeat contact: 3 tickets in 24 h → high"
    )
    # "poutage" is not an outage.
    assert decide(rules, Signals(text="la poutage")).priority == "normal"


def test_every_text_field_is_spelled_out_in_the_shipped_rules_yaml() -> None:
    # The README says rules.yaml shows every field: each customer text must be in it, in
    # every language it lists (a field the desk never uses must not exist at all).
    import yaml

    from bot.domain.rules import Texts

    shipped = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    for language, texts in shipped["texts"]["languages"].items():
        assert set(texts) == set(Texts.model_fields), language
