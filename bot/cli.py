"""``deskbot``: run the desk, try it in the sandbox, migrate, or use the model."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from bot.base.settings import (
    SANDBOX_DESK_PORT,
    SANDBOX_STANDIN_PORT,
    Settings,
    SettingsError,
    load_settings,
    log_level,
    require_platforms,
)
from bot.commands.automations import main as automations_main
from bot.commands.automations import suspended_lines
from bot.commands.kb import main as kb_main
from bot.commands.keys import main as keys_main
from bot.commands.learn import main as learn_main
from bot.commands.sla import main as sla_main
from bot.domain.rules import Rules, RulesError, load_rules
from bot.domain.words import counted
from bot.reports.command import print_report
from bot.reports.metrics import GROUP_KEYS, PeriodError
from bot.selfservice.kb import kb_folder
from nlp.cli import main as nlp_main
from nlp.encoder import EncoderError
from nlp.kb import ArticleError, read_articles
from nlp.service import ModelError
from storage.db import DatabaseError, create_engine, migrate, reach, where

# bot.app (the adapters and their client libraries) and the sandbox take seconds to import:
# `run` and `sandbox` import them when they start, so that a bad setting is said at once.

log = logging.getLogger("deskbot")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Client libraries log request URLs at DEBUG/INFO, and a Telegram URL contains the token.
    for noisy in ("aiogram", "aiohttp.access", "slack_bolt", "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _dotenv() -> None:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env")


def _load() -> tuple[Settings, Rules]:
    settings = load_settings()
    return settings, load_rules(settings.rules_path)


def _reach(settings: Settings) -> str:
    """Connect to the database as the start does, and say which one answered. A SQLite file
    that is not there yet is not created (the start creates it): its folder is looked at."""
    engine = create_engine(settings.database_url)
    file = (engine.url.database or "") if engine.dialect.name == "sqlite" else ""
    if file and file != ":memory:" and not Path(file).exists():
        if not Path(file).parent.is_dir():
            raise DatabaseError(f"the SQLite file's folder {Path(file).parent} does not exist")
        return f"database {where(engine)}: no file yet, `deskbot run` creates it"

    async def ping_once() -> None:
        try:
            await reach(engine)
        finally:
            await engine.dispose()

    asyncio.run(ping_once())
    return f"database {where(engine)} answers"


def _cmd_run(_args: argparse.Namespace) -> int:
    settings, rules = _load()
    require_platforms(settings)
    _reach(settings)  # before the model loads: a wrong URL is said at once
    from bot.app import StartupError, serve

    try:
        asyncio.run(serve(settings, rules))
    except StartupError as exc:
        return _fail(exc)
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from bot.commands.sandbox import FreshRefused, run_sandbox

    try:
        asyncio.run(
            run_sandbox(
                desk_port=args.port,
                standin_port=args.standin_port,
                fresh=args.fresh,
                slack_socket=args.slack_socket,
            )
        )
    except FreshRefused as exc:
        return _fail(exc)
    return 0


def _cmd_migrate(_args: argparse.Namespace) -> int:
    settings, _rules = _load()

    async def go() -> None:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())
    print("database is at the newest schema")
    return 0


def _cmd_check(_args: argparse.Namespace) -> int:
    """What `deskbot run` checks before it serves, in the same order and with the same
    errors, without serving: the settings, rules.yaml, the articles, the database (connected
    to, not changed) and, with DESK_MODEL=local, the model (loaded, then let go)."""
    settings, rules = _load()
    require_platforms(settings)
    channels = ", ".join(settings.customer_channels)
    sqlite = ""
    if settings.database_url.startswith("sqlite"):
        sqlite = "; SQLite statements on " + (
            "aiosqlite's thread" if settings.sqlite_thread else "the event loop's thread"
        )
    assert settings.slack is not None  # require_platforms
    slack = "Socket Mode" if settings.slack.socket_mode else "Events API at /slack/events"
    # Names of settings only, never a value: check's output is pasted into tickets and chats.
    print(
        f"settings ok (customer channels: {channels}; slack: {slack}; model: {settings.model};"
        f" log level: {settings.log_level}{sqlite})"
    )
    for warning in settings.email.plain_text_warnings() if settings.email else []:
        print(f"warning: {warning}")
    teams = ", ".join(
        f"{name} → {team.channel} ({team.assignment}, {counted(len(team.agents), 'agent')})"
        for name, team in rules.all_teams.items()
    )
    print(f"{settings.rules_path} ok (version {rules.version}; teams: {teams})")
    if rules.automations:
        timed = sum(1 for rule in rules.automations if rule.is_time_rule)
        limits = rules.automation_limits
        print(
            f"automations ok ({counted(len(rules.automations) - timed, 'event rule')},"
            f" {counted(timed, 'time rule')}; chain_depth {limits.chain_depth},"
            f" at most {limits.per_ticket_per_day} firings of a rule per ticket a day;"
            " replayable with `deskbot automations replay`, explained on a ticket with"
            " `deskbot automations explain`)"
        )
    if rules.kb.enabled:
        folder = kb_folder(rules, settings.rules_path)
        articles = read_articles(folder)  # a broken article stops here, named
        print(f"{folder} ok ({counted(len(articles), 'knowledge-base article')})")
    ring = settings.data_keys
    if ring is None:
        print("data at rest: stored in clear (no DESK_DATA_KEY; `deskbot keys new` makes one)")
    else:
        old = f"; old keys still read: {', '.join(ring.old_ids)}" if ring.old_ids else ""
        print(f"data at rest: customers' data encrypted (AES-GCM, key {ring.key_id}{old})")
    reached = _reach(settings)
    print(reached)
    if rules.automations and reached.endswith("answers"):
        held = asyncio.run(suspended_lines(settings.database_url))
        for line in held:
            print(line)
        if not held:
            print("no automation is suspended on any ticket")
    if settings.model == "local":
        asyncio.run(_load_model(settings, rules))
        print("model ok (loaded as `deskbot run` loads it)")
    return 0


async def _load_model(settings: Settings, rules: Rules) -> None:
    from bot.model import ModelClassifier  # the model is heavy: loaded only when asked for

    classifier = await ModelClassifier.create(settings, rules)
    await classifier.close()


def _fail(exc: BaseException) -> int:
    print(f"deskbot: {exc}", file=sys.stderr)
    return 2


def _cmd_report(args: argparse.Namespace) -> int:
    settings, rules = _load()
    now = datetime.now(UTC)
    try:
        out, charts = asyncio.run(
            print_report(
                settings.database_url,
                rules,
                settings.tz,
                args.start,
                args.to,
                args.by,
                args.format,
                now,
                args.charts is not None,
            )
        )
    except PeriodError as exc:
        print(f"deskbot report: {exc}", file=sys.stderr)
        return 2
    if args.charts is not None:
        args.charts.mkdir(parents=True, exist_ok=True)
        for chart in charts:
            (args.charts / chart.name).write_bytes(chart.png)
    sys.stdout.write(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskbot", description=__doc__)
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: DESK_LOG_LEVEL)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the desk against the platforms configured in the environment")
    sb = sub.add_parser("sandbox", help="run the desk against local stand-ins: no accounts needed")
    sb.add_argument("--port", type=int, default=SANDBOX_DESK_PORT, help="the desk's port")
    sb.add_argument(
        "--standin-port", type=int, default=SANDBOX_STANDIN_PORT, help="the stand-ins' port"
    )
    sb.add_argument(
        "--fresh",
        action="store_true",
        help="start from scratch: delete the sandbox's database and the stand-ins' state first "
        "(without it, a sandbox continues where the last one stopped)",
    )
    sb.add_argument(
        "--slack-socket",
        action="store_true",
        help="Slack reaches the desk over Socket Mode (as with SLACK_APP_TOKEN) instead of the"
        " Events API",
    )
    sub.add_parser("migrate", help="bring the database schema up to date")
    sub.add_parser("check", help="validate the environment and rules.yaml, then exit")
    rp = sub.add_parser("report", help="supervisors' figures for a period (DESK_TZ days)")
    rp.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD")
    rp.add_argument("--to", required=True, metavar="YYYY-MM-DD", help="the last day, included")
    rp.add_argument("--by", choices=GROUP_KEYS, help="also one block of figures per group")
    rp.add_argument("--format", choices=("json", "csv", "text"), default="json")
    rp.add_argument("--charts", type=Path, metavar="DIR", help="also write the PNG charts there")
    sub.add_parser("nlp", help="the local model: classify, train, eval, bench", add_help=False)
    sub.add_parser("kb", help="the knowledge base: index, eval", add_help=False)
    sub.add_parser("keys", help="encryption at rest: a new data key, rotate", add_help=False)
    sub.add_parser("sla", help="check an SLA policy: replay a timeline, due times", add_help=False)
    sub.add_parser(
        "automations", help="check automations: replay a ticket timeline", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["nlp", "train"] and "--from-desk" in argv:
        # Reads the desk's database: not nlp/'s job.
        return learn_main(argv[2:])
    if argv[:1] == ["nlp"]:
        return nlp_main(argv[1:])
    if argv[:1] == ["kb"]:
        return kb_main(argv[1:])
    if argv[:1] == ["sla"]:
        return sla_main(argv[1:])
    if argv[:1] == ["automations"]:
        return automations_main(argv[1:])
    if argv[:1] == ["keys"]:
        return keys_main(argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {
        "run": _cmd_run,
        "sandbox": _cmd_sandbox,
        "migrate": _cmd_migrate,
        "check": _cmd_check,
        "report": _cmd_report,
    }
    try:
        if args.command != "sandbox":  # the sandbox reads no .env: its settings are its own
            _dotenv()
        _setup_logging(log_level(args.log_level or os.environ.get("DESK_LOG_LEVEL") or "INFO"))
        return handlers[args.command](args)
    except (
        SettingsError,
        RulesError,
        DatabaseError,
        ModelError,
        EncoderError,
        ArticleError,
    ) as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
