"""aiogram imported with its types built when first used (adapters/aiogram_lazy.py) reads every
Telegram payload we hold exactly as aiogram's own eager import does.

Each side runs in a fresh interpreter, since the first import of aiogram in a process decides
how its types are built (this test process may have imported it already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

READ_ALL = """
import json, re, sys
from pathlib import Path
{first}
import adapters.telegram
from aiogram.types import Update
from adapters.telegram import parse_update_json
complete_after_import = Update.__pydantic_complete__
folder = Path(sys.argv[1])
read = {{}}
for path in sorted([*folder.glob("*.json"), *(folder / "conformance").glob("*.json")]):
    data = json.loads(path.read_text())
    data.setdefault("update_id", 700001)
    try:
        # received_at is the moment of reading: the one field that differs by design.
        read[path.name] = re.sub(r"received_at=datetime[.]datetime[(][^)]*[)]", "",
                                 repr(parse_update_json(data)))
    except Exception as exc:
        read[path.name] = "error: " + type(exc).__name__
print(json.dumps({{"complete_after_import": complete_after_import, "read": read}}))
"""


def _fresh(script: str, *args: str) -> dict[str, object]:
    """What ``script`` prints (JSON), run in a fresh interpreter at the repository's root."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _read_all(first: str) -> dict[str, object]:
    return _fresh(READ_ALL.format(first=first), str(ROOT / "tests/payloads/telegram"))


def test_deferred_types_read_every_payload_as_the_eager_import_does() -> None:
    deferred = _read_all(first="")
    eager = _read_all(first="import aiogram  # before adapters: aiogram's own eager import")
    # The deferral is real: the types were not built at import...
    assert deferred["complete_after_import"] is False
    assert eager["complete_after_import"] is True
    # ...and every payload reads the same, errors included.
    read, expected = deferred["read"], eager["read"]
    assert isinstance(read, dict) and isinstance(expected, dict)
    assert len(read) >= 70
    assert read == expected
    assert sum(1 for r in read.values() if str(r).startswith("error")) < len(read) / 2


BUILD_CALLS = """
import json, re
{first}
import adapters.telegram
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.methods import (
    AnswerCallbackQuery, EditMessageReplyMarkup, GetFile, GetMe, GetUpdates, SendDocument,
    SendMessage, SendPhoto, SetMyCommands,
)
from aiogram.types import (
    BotCommand, BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup, KeyboardButton,
    ReplyKeyboardMarkup,
)
complete_after_import = SendMessage.__pydantic_complete__
inline = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="That solved it", callback_data="kb:solved:1")]]
)
share = ReplyKeyboardMarkup(
    keyboard=[[KeyboardButton(text="Share my number", request_contact=True)]],
    one_time_keyboard=True, resize_keyboard=True,
)
# The calls the desk makes (adapters/telegram.py), as aiogram puts them on the wire.
calls = [
    SendMessage(chat_id=42, text="Ticket #1 <b>", reply_markup=inline),
    SendMessage(chat_id=42, text="Your number?", reply_markup=share),
    SendPhoto(chat_id=42, photo=BufferedInputFile(b"PNG", filename="a.png"), caption="c"),
    SendDocument(chat_id="42", document=BufferedInputFile(b"PDF", filename="a.pdf")),
    EditMessageReplyMarkup(chat_id=42, message_id=7, reply_markup=inline),
    AnswerCallbackQuery(callback_query_id="99", text="Thanks"),
    GetFile(file_id="F1"), GetMe(), GetUpdates(offset=5, timeout=30, allowed_updates=["message"]),
    SetMyCommands(commands=[BotCommand(command="status", description="My tickets")],
                  language_code="es"),
]
bot, session = Bot("123:ABC"), AiohttpSession()
wire = []
for call in calls:
    fields = [(o.get("name"), o.get("filename"), str(v))
              for o, _, v in session.build_form_data(bot, call)._fields]
    # A file's part name is random, and its reader an object: the same either way.
    wire.append(re.sub(r"attach://[\\w-]+|'[\\w-]{{10,}}', '|0x[0-9a-f]+", "~", repr(fields)))
print(json.dumps({{"complete_after_import": complete_after_import, "wire": wire}}))
"""


def _build_calls(first: str) -> dict[str, object]:
    return _fresh(BUILD_CALLS.format(first=first))


def test_deferred_methods_put_the_desks_calls_on_the_wire_as_the_eager_import_does() -> None:
    deferred = _build_calls(first="")
    eager = _build_calls(first="import aiogram  # before adapters: aiogram's own eager import")
    assert deferred["complete_after_import"] is False  # built when first called
    assert eager["complete_after_import"] is True
    wire = deferred["wire"]
    assert isinstance(wire, list) and len(wire) == 10
    assert wire == eager["wire"]
    assert "kb:solved:1" in wire[0] and "request_contact" in wire[1] and "a.png" in wire[2]
