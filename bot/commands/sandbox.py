"""``deskbot sandbox``: the real desk against loopback stand-ins, with no accounts at all.

This is the only place the product imports ``sandbox/``.

A second ``deskbot sandbox`` continues the first: the database stays, the stand-ins reload
their chats and channels from a state file beside it, and (whether that file is there or not)
they carry on after every platform id the database already holds, as the real platforms never
hand out an id twice. ``--fresh`` removes both and starts from nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.app import serve
from bot.base.clock import OffsetClock
from bot.base.settings import (
    SANDBOX_DESK_PORT,
    SANDBOX_STANDIN_PORT,
    EmailSettings,
    Settings,
    SlackSettings,
    TelegramSettings,
    WhatsAppSettings,
    load_settings,
    mail_server,
)
from bot.domain.automations import Automation
from bot.domain.macros import Macro
from bot.domain.rules import Rules, load_rules, parse_rules
from bot.domain.words import counted
from nlp import research_heads
from sandbox import DeskHistory, StandIns
from storage.db import create_engine, migrate, session_factory
from storage.models import Customer, Identity, InboxRow, Message, OutboxRow, Ticket

DEFAULT_DB = "deskbot-sandbox.db"
STATE_SUFFIX = ".standins.json"


class FreshRefused(RuntimeError):
    """--fresh was asked for a database the sandbox does not own."""


def _model() -> str:
    return os.environ.get("DESK_MODEL") or "local"


def sandbox_settings(standins: StandIns, *, desk_port: int, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=desk_port,
        model=_model(),
        rules_path=Path(os.environ.get("DESK_RULES") or "rules.yaml"),
        telegram=TelegramSettings(
            bot_token=standins.telegram_token,
            api_base=standins.telegram_api_base,
            poll_timeout=10,
        ),
        whatsapp=WhatsAppSettings(
            access_token=standins.whatsapp_access_token,
            phone_number_id=standins.whatsapp_phone_number_id,
            app_secret=standins.whatsapp_app_secret,
            verify_token="sandbox-verify",
            api_base=standins.whatsapp_api_base,
        ),
        slack=SlackSettings(
            bot_token=standins.slack_bot_token,
            signing_secret=standins.slack_signing_secret,
            api_base=standins.slack_api_base,
            app_token=standins.slack_app_token,  # set with --slack-socket
        ),
        # The stand-ins' own IMAP and SMTP servers on loopback (sandbox/email.py): the desk's
        # real email adapter reads and sends through them as through a real mailbox.
        email=EmailSettings(
            address=standins.email.address,
            imap=mail_server("DESK_EMAIL_IMAP_URL", standins.email.imap_url()),
            smtp=mail_server("DESK_EMAIL_SMTP_URL", standins.email.smtp_url()),
            name="Example Support",
            public_url=f"http://127.0.0.1:{desk_port}",
        ),
    )


def _rules() -> Rules:
    path = Path(os.environ.get("DESK_RULES") or "rules.yaml")
    return load_rules(path) if path.exists() else parse_rules({"version": 1})


# With rules.yaml's automations commented out (as shipped), the sandbox still shows them: a
# reminder 15 minutes after an agent's reply leaves the ticket waiting on the customer, and a
# close-for-now after an hour, both one press of the page's ⏩ +15 min away.
SANDBOX_MACROS = (
    Macro(
        name="Still there?",
        text={
            "en": "Are you still there? Reply here if you still need help with ticket #{ticket}."
        },
    ),
    Macro(
        name="Closing for now",
        text={
            "en": "We have not heard from you, so we are closing ticket #{ticket} for now."
            " Write here any time to reopen it."
        },
    ),
)
SANDBOX_AUTOMATIONS = (
    {
        "id": "sandbox-pending-reminder",
        "after": {"pending": "15m"},
        "unless": {"tags": ["no-reminders"]},
        "do": [{"reply": {"macro": "Still there?"}}, {"add_tag": "reminded"}],
    },
    {
        "id": "sandbox-pending-autoclose",
        "after": {"pending": "1h"},
        "do": [{"reply": {"macro": "Closing for now"}}, {"set_status": "resolved"}],
    },
)
AUTOMATIONS_STORY = (
    "  Automations: rules.yaml has none, so the sandbox adds two: a reminder 15 minutes after an"
    " agent's reply leaves a ticket waiting on the customer, and a close-for-now after an hour"
    " (the page's ⏩ +15 min shows the reminder within seconds).\n"
)


def sandbox_rules(rules: Rules) -> Rules:
    """``rules`` with the sandbox's two example automations when it has none of its own."""
    if rules.automations:
        return rules
    names = {m.name for m in rules.macros}
    return rules.model_copy(
        update={
            "macros": (*rules.macros, *(m for m in SANDBOX_MACROS if m.name not in names)),
            "automations": tuple(Automation.model_validate(a) for a in SANDBOX_AUTOMATIONS),
        }
    )


@dataclass(frozen=True)
class SandboxFiles:
    database_url: str
    database_file: Path | None  # the SQLite file, when the sandbox owns it
    state_file: Path

    @property
    def shown(self) -> str:
        return str(self.database_file) if self.database_file else _hide_password(self.database_url)


def sandbox_files(cwd: Path | None = None) -> SandboxFiles:
    """The default SQLite file in the working folder, or ``DESK_DATABASE_URL`` if set.

    The stand-ins' state file sits beside the SQLite file, or in the working folder named after
    the database, so that two databases never share one.
    """
    cwd = cwd or Path.cwd()
    if os.environ.get("DESK_DATABASE_URL"):
        url = load_settings().database_url
        tag = hashlib.sha256(url.encode()).hexdigest()[:8]
        return SandboxFiles(url, None, cwd / f"deskbot-sandbox-{tag}{STATE_SUFFIX}")
    db = cwd / DEFAULT_DB
    return SandboxFiles(f"sqlite+aiosqlite:///{db}", db, db.with_suffix(STATE_SUFFIX))


def _hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def remove_sandbox(files: SandboxFiles) -> list[Path]:
    """``--fresh``: delete the sandbox's own database (with its WAL files) and state file."""
    if files.database_file is None:
        raise FreshRefused(
            "--fresh only deletes the sandbox's own database file; DESK_DATABASE_URL is set, "
            "so empty that database yourself (or unset it to use ./deskbot-sandbox.db)"
        )
    db = files.database_file
    candidates = [
        db,
        db.with_name(db.name + "-wal"),
        db.with_name(db.name + "-shm"),
        db.with_name(db.name + "-journal"),
        files.state_file,
        files.state_file.with_name(files.state_file.name + ".tmp"),
    ]
    removed = []
    for path in candidates:
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def _ints(values: Any) -> list[str]:
    return [str(v) for v in values if isinstance(v, int)]


def _telegram_message_ids(raw: Any) -> list[str]:
    """Message ids inside a stored Telegram update: the message, an edit, a pressed button's."""
    if not isinstance(raw, dict):
        return []
    found: list[Any] = []
    for key in ("message", "edited_message", "channel_post"):
        if isinstance(raw.get(key), dict):
            found.append(raw[key].get("message_id"))
    query = raw.get("callback_query")
    if isinstance(query, dict) and isinstance(query.get("message"), dict):
        found.append(query["message"].get("message_id"))
    return _ints(found)


async def desk_history(database_url: str) -> DeskHistory:
    """Every platform id and conversation the desk's database holds, for the stand-ins."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)  # a fresh database gets its tables; the desk would do it anyway
        history = DeskHistory()
        async with session_factory(engine)() as s:
            inbox = (
                await s.execute(select(InboxRow.channel, InboxRow.external_id, InboxRow.raw))
            ).all()
            for channel, external_id, raw in inbox:
                if channel == "telegram":
                    history.telegram_update_ids.append(external_id)
                    history.telegram_message_ids += _telegram_message_ids(raw)
                elif channel == "whatsapp":
                    history.whatsapp_ids.append(external_id)
                elif channel == "slack":
                    history.slack_ids.append(external_id)
            sent = (
                await s.execute(
                    select(OutboxRow.channel, OutboxRow.platform_message_id).where(
                        OutboxRow.platform_message_id.is_not(None)
                    )
                )
            ).all()
            recorded = (
                await s.execute(
                    select(Message.channel, Message.platform_message_id).where(
                        Message.platform_message_id.is_not(None)
                    )
                )
            ).all()
            for channel, pid in [*sent, *recorded]:
                if pid is None:
                    continue
                {
                    "telegram": history.telegram_message_ids,
                    "whatsapp": history.whatsapp_ids,
                    "slack": history.slack_ids,
                }.get(channel, []).append(pid)
            for column in (Ticket.slack_ts, Message.slack_ts):
                history.slack_ids += [ts for ts in (await s.scalars(select(column))).all() if ts]
            people = (
                await s.execute(
                    select(Identity.channel, Identity.chat_id, Customer.name).join(
                        Customer, Customer.id == Identity.customer_id
                    )
                )
            ).all()
            for channel, chat_id, name in people:
                if channel == "telegram" and chat_id.lstrip("-").isdigit():
                    history.telegram_chats[int(chat_id)] = name
                elif channel == "whatsapp":
                    history.whatsapp_names[chat_id] = name
            last_wrote = (
                await s.execute(
                    select(InboxRow.conversation, func.max(InboxRow.received_at))
                    .where(
                        InboxRow.channel == "whatsapp",
                        InboxRow.kind.in_(("customer_message", "customer_button")),
                    )
                    .group_by(InboxRow.conversation)
                )
            ).all()
            for conversation, at in last_wrote:
                wa_id = conversation.removeprefix("whatsapp:")
                history.whatsapp_last_inbound[wa_id] = at.timestamp()
        return history
    finally:
        await engine.dispose()


# Reads a JSON answer on stdin and prints one value of it: how the banner's shell lines pass an
# id from one request to the next (any python3 will do; the sandbox already needs one).
_PICK = "python3 -c 'import json,sys; d=json.load(sys.stdin); print({})'"
FIRST_WORDS = "My order arrived damaged"
# The card of the first customer's ticket: the newest card that quotes their message. (In a
# continued sandbox the message joins that customer's ticket, in its card's thread, and the
# newest card is someone else's.)
_CARD_OF_FIRST = _PICK.format(f'[m["ts"] for m in d if "{FIRST_WORDS}" in json.dumps(m)][-1]')
# The knowledge base's answer is the bot's message with a "kb:solved:N" button.
_KB_BUTTONS = (
    '[(m["message_id"], b["callback_data"]) for m in d'
    ' for row in m.get("reply_markup", {}).get("inline_keyboard", []) for b in row'
    ' if b.get("callback_data", "").startswith("kb:solved")][-1]'
)
# The cards' "Model …" lines (the context block under each card).
_MODEL_LINES = _PICK.format(
    'json.dumps([e["text"] for m in d for b in m.get("blocks", []) for e in b.get("elements", [])'
    ' if str(e.get("text", "")).startswith("Model")], ensure_ascii=False, indent=1)'
)
ZH_EXAMPLE = "外卖送了两个小时还没到，饭菜全凉了，太差劲了"
ES_EXAMPLE = "El pedido llegó roto y nadie me responde, es una vergüenza"
_KB_MID = _PICK.format(_KB_BUTTONS + "[0]")
_KB_DATA = _PICK.format(_KB_BUTTONS + "[1]")


def curl_lines(control: str) -> list[str]:
    """The banner's walk-through: comments and shell lines, each complete on its own line, so
    that pasting them into bash (one by one or all at once) works: no line continues inside a
    quoted JSON body, URLs with ``?`` are quoted, and the ids a later line needs are read into
    shell variables (TS, MID, DATA) by the line before it."""
    c = control
    ts = '"\'"$TS"\'"'  # closes the single quotes, inserts "$TS" as a JSON string, reopens
    return [
        "# a Telegram customer writes",
        f"curl -s {c}/telegram/customer_says"
        f""" -d '{{"chat_id": 42, "text": "{FIRST_WORDS}"}}'""",
        "# the ticket card in #support, and the customer's chat",
        f"curl -s '{c}/slack/messages?channel=C0SUPPORT'",
        f"curl -s '{c}/telegram/sent?chat_id=42'",
        "# the ts of that ticket's card, for the next lines",
        f"TS=$(curl -s '{c}/slack/messages?channel=C0SUPPORT' | {_CARD_OF_FIRST}) && echo $TS",
        "# alice claims it, answers in the card's thread, then resolves it",
        f'curl -s {c}/slack/agent_clicks -d \'{{"channel": "C0SUPPORT", "message_ts": {ts},'
        """ "action_id": "ticket_claim", "user": "U0ALICE"}'""",
        f'curl -s {c}/slack/agent_replies -d \'{{"channel": "C0SUPPORT", "thread_ts": {ts},'
        """ "user": "U0ALICE", "text": "Sorry! It ships today."}'""",
        f'curl -s {c}/slack/agent_clicks -d \'{{"channel": "C0SUPPORT", "message_ts": {ts},'
        """ "action_id": "ticket_resolve", "user": "U0ALICE"}'""",
        "# a WhatsApp customer writes",
        f"curl -s {c}/whatsapp/customer_says"
        """ -d '{"wa_id": "15551234567", "text": "Hi there"}'""",
        "# an email customer writes (to the pretend mailbox), and the mail the desk sent them",
        f"curl -s {c}/email/customer_writes"
        """ -d '{"from": "anna@customer.test", "subject": "Order 55", "text": "Where is it?"}'""",
        f"curl -s '{c}/email/sent?to=anna@customer.test'",
        "# a Chinese and a Spanish customer: each card's Model line names the heads of their own"
        " language that read them (none where those heads are not built: see above)",
        f'curl -s {c}/telegram/customer_says -d \'{{"chat_id": 44, "first_name": "Wei",'
        f' "language_code": "zh-hans", "text": "{ZH_EXAMPLE}"}}\'',
        f'curl -s {c}/telegram/customer_says -d \'{{"chat_id": 45, "first_name": "Lucía",'
        f' "language_code": "es", "text": "{ES_EXAMPLE}"}}\'',
        f"curl -s '{c}/slack/messages?channel=C0ZH' | {_MODEL_LINES}",
        f"curl -s '{c}/slack/messages?channel=C0SUPPORT' | {_MODEL_LINES}",
        '# a question the knowledge base (kb/) answers, with "That solved it" / "Talk to a person"',
        f"curl -s {c}/telegram/customer_says"
        """ -d '{"chat_id": 43, "text": "how do I cancel my subscription?"}'""",
        '# the answer\'s message id and its "That solved it" button; the customer presses it',
        f"MID=$(curl -s '{c}/telegram/sent?chat_id=43' | {_KB_MID}) && echo $MID",
        f"DATA=$(curl -s '{c}/telegram/sent?chat_id=43' | {_KB_DATA}) && echo $DATA",
        f'curl -s {c}/telegram/customer_presses -d \'{{"chat_id": 43,'
        """ "message_id": '"$MID"', "data": "'"$DATA"'"}'""",
    ]


def banner(standin_url: str, desk_url: str, db: str, *, story: str = "") -> str:
    walk = "\n".join(f"  {line}" for line in curl_lines(f"{standin_url}/control"))
    return f"""
deskbot sandbox is running: the real desk, with pretend Telegram, WhatsApp, Slack and a mailbox.
{story}
  Play both sides in a browser:  {standin_url}/
  The desk:                      {desk_url}   ({desk_url}/healthz, {desk_url}/metrics)
  Its database:                  {db}

Or with curl (each line works pasted into bash; TS, MID and DATA carry ids between lines):
{walk}

Ctrl-C stops it; `make sandbox` again continues where you left off.
"""


async def _ticket_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as s:
            return int(await s.scalar(select(func.count()).select_from(Ticket)) or 0)
    finally:
        await engine.dispose()


def _story(
    files: SandboxFiles,
    *,
    removed: list[Path],
    tickets: int,
    loaded: bool,
    clock_minutes: float = 0,
    ports: tuple[int, int] = (SANDBOX_DESK_PORT, SANDBOX_STANDIN_PORT),
) -> str:
    """What the banner says about where this sandbox came from (and its clock, if moved).
    ``ports``: the desk's and the stand-ins' ports, kept in the --fresh advice."""
    clock = (
        f"  The desk's clock is {_minutes(clock_minutes)} ahead of real time (the page's ⏩ "
        "fast-forward, kept across restarts; --fresh resets it).\n"
        if clock_minutes > 0
        else ""
    )
    if tickets == 0 and not loaded:
        gone = f" (removed {', '.join(p.name for p in removed)})" if removed else ""
        return f"\nStarted a fresh sandbox{gone}.\n{clock}"
    where = (
        f"chats and channels from {files.state_file.name}"
        if loaded
        else f"no {files.state_file.name}, so the pretend chats and channels start empty"
    )
    return (
        f"\nContinuing the sandbox in {files.shown}: {counted(tickets, 'ticket')} so far;"
        f" {where}.\n"
        f"{clock}"
        f"  Start from scratch instead: make sandbox ARGS={_fresh_args(ports)}"
        f"  (deskbot sandbox {_fresh_args(ports).strip(QUOTE)})\n"
    )


QUOTE = '"'


def _fresh_args(ports: tuple[int, int]) -> str:
    """``--fresh``, with the ports this sandbox runs on when they are not the defaults."""
    args = ["--fresh"]
    if ports[0] != SANDBOX_DESK_PORT:
        args += ["--port", str(ports[0])]
    if ports[1] != SANDBOX_STANDIN_PORT:
        args += ["--standin-port", str(ports[1])]
    return args[0] if len(args) == 1 else '"' + " ".join(args) + '"'


def _minutes(total: float) -> str:
    """+15 min, +2 h 30 min: as the page shows the fast-forward."""
    whole = round(total)
    hours, minutes = divmod(whole, 60)
    if not hours:
        return f"+{minutes} min"
    return f"+{hours} h" + (f" {minutes} min" if minutes else "")


# What the sandbox's WhatsApp shows for the templates rules.yaml names: a real business writes
# and approves its own in WhatsApp Manager (README, "WhatsApp beyond 24 hours").
TEMPLATE_BODIES = {
    "reply_waiting": {
        "en": "We have an update on your ticket #{{1}}. Reply to this message to read it.",
        "es": "Tenemos novedades sobre su ticket #{{1}}. Responda a este mensaje para leerlas.",
        "zh": "您的工单 #{{1}} 有新的回复。回复此消息即可查看。",
        "ru": "По вашему обращению #{{1}} есть ответ. Ответьте, чтобы его прочитать.",
    },
    "rating_request": {
        "en": "How did we do with ticket #{{1}}? Reply with a number from 1 to 5.",
    },
}


def approve_templates(standins: StandIns, rules: Rules) -> None:
    """Register in the WhatsApp stand-in each template rules.yaml names, in each language, as
    WhatsApp Manager would after approval: the desk's sends are then checked against them."""
    for purpose, template in rules.whatsapp.templates.items():
        bodies = TEMPLATE_BODIES.get(purpose, {})
        for desk_language, code in template.languages.items():
            body = bodies.get(desk_language) or bodies.get("en")
            if body is None or len(template.parameters) != 1:
                # Other parameter lists: a neutral body with one placeholder per parameter.
                slots = " · ".join(f"{{{{{n}}}}}" for n in range(1, len(template.parameters) + 1))
                body = f"Update on your ticket: {slots}".rstrip(": ")
            standins.whatsapp.register_template(template.name, code, body)


# The Chinese and Spanish sentiment heads (nlp/research_heads.py): fitted on this machine when
# their research data is beside the checkout, in a process of its own (scikit-learn and SciPy
# would stay in the desk's memory otherwise), before the desk loads its model.
BUILD_TIMEOUT = 300.0  # seconds; measured 3–9 s on 2 shared cores
BUILD_ESTIMATE = "about 10 s"


def _names(languages: Sequence[str]) -> str:
    return " and ".join(research_heads.LANGUAGE_NAMES.get(x, x) for x in languages)


def _data_names(languages: Sequence[str]) -> str:
    return " and ".join(research_heads.DATA_NAMES[x] for x in languages)


async def prepare_language_heads(
    model: str,
    *,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
    plan: research_heads.Plan | None = None,
    command: Sequence[str] | None = None,
    timeout: float = BUILD_TIMEOUT,
) -> bool:
    """Before the desk starts: build the sandbox's missing language heads where their data is,
    or say in one line why Chinese and Spanish cards show no model reading. Returns whether a
    build ran and succeeded; a failed build is said and the sandbox starts without them.

    Nothing happens under ``DESK_MODEL=rules`` (no model at all) or with
    ``DESK_LANGUAGE_HEADS`` (a folder of heads chosen by hand)."""
    if model == "rules" or not research_heads.wanted():
        return False
    plan = plan or research_heads.plan()
    if plan.no_data:
        say(
            f'{_names(plan.no_data)} cards show no model reading ("Model: not applied"): their'
            f" sentiment heads are trained on {_data_names(plan.no_data)}, whose terms forbid"
            " shipping them, and that data is not in"
            f" {plan.data_dir} (DESK_DATA_DIR); with it there the sandbox builds them on start"
            ' (docs/model-card.md, "Every customer\'s language").'
        )
    if not plan.to_build:
        return False
    if not plan.can_fit:
        say(
            f"{_names(plan.to_build)} cards show no model reading: their sentiment heads are"
            f" fitted on this machine from {plan.data_dir} (the data's terms forbid shipping"
            " them), which needs scikit-learn: `make sandbox` installs it, or"
            " `pip install -e '.[language-heads]'`."
        )
        return False
    say(
        f"Building the {_names(plan.to_build)} sentiment heads on this machine from"
        f" {_data_names(plan.to_build)} in {plan.data_dir} (their terms forbid shipping a model"
        f" trained on them, so none is in the repository): once, {BUILD_ESTIMATE}."
    )
    argv = command or [sys.executable, "-m", "nlp.research_heads", "build", *plan.to_build]
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        err, out = f"no answer in {timeout:.0f} s".encode(), b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    took = time.monotonic() - began
    if proc.returncode == 0:
        say(
            f"  Built in {took:.1f} s into nlp/heads/languages-local (git-ignored): their cards"
            " show the reading and the model."
        )
        return True
    last = (err or out).decode(errors="replace").strip().splitlines()
    why = last[-1] if last else f"exit {proc.returncode}"
    say(
        f"  The build failed after {took:.1f} s ({why}); the"
        f" sandbox starts without them: {_names(plan.to_build)} cards show no model reading."
    )
    return False


async def run_sandbox(
    *, desk_port: int, standin_port: int, fresh: bool = False, slack_socket: bool = False
) -> None:
    started = time.monotonic()
    files = sandbox_files()
    removed = remove_sandbox(files) if fresh else []
    # Before the desk loads its model, which then reads the heads built here.
    await prepare_language_heads(_model())
    desk_url = f"http://127.0.0.1:{desk_port}"
    standins = StandIns.for_sandbox(
        desk_url, state_path=files.state_file, slack_socket=slack_socket
    )
    history = await desk_history(files.database_url)
    tickets = await _ticket_count(files.database_url)
    standin_url = await standins.start(port=standin_port)
    # After loading the state file: its counters may lag the database (saved a moment late).
    standins.continue_after(history)
    # The page's fast-forward moves the desk's clock, so SLA warnings show within a minute.
    # The offset is kept in the state file: a continued sandbox starts where its clock stood.
    clock = OffsetClock(timedelta(seconds=standins.clock_offset))

    def advance(minutes: float) -> float:
        clock.advance(minutes=minutes)
        return clock.offset.total_seconds() / 60

    standins.advance_clock = advance
    own = _rules()
    rules = sandbox_rules(own)
    approve_templates(standins, rules)
    try:
        settings = sandbox_settings(standins, desk_port=desk_port, database_url=files.database_url)
        story = _story(
            files,
            removed=removed,
            tickets=tickets,
            loaded=standins.continued,
            clock_minutes=standins.clock_offset / 60,
            ports=(desk_port, standin_port),
        ) + ("" if own.automations else AUTOMATIONS_STORY)
        await serve(
            settings,
            rules,
            banner=banner(standin_url, desk_url, files.shown, story=story),
            started=started,
            clock=clock,
        )
    finally:
        await standins.stop()
