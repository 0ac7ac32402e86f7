"""How the desk words what people read: counted nouns agree with their number, and Spanish
customers are addressed as "usted" everywhere, the /link texts included."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.customers.linking import TEXTS
from bot.domain.words import counted, plural

ROOT = Path(__file__).parent.parent
# Forms of "tú" (the familiar you) that a text addressing "usted" never has.
INFORMAL = re.compile(r"\b(tú|tu|tus|te|ti|contigo|puedes|usa|comparte|envía|reconocerte)\b")


def test_a_count_agrees_with_its_noun() -> None:
    assert counted(1, "ticket") == "1 ticket"
    assert counted(0, "ticket") == "0 tickets"
    assert counted(1, "identity") == "1 identity"
    assert counted(3, "identity") == "3 identities"
    assert counted(2, "raw platform payload") == "2 raw platform payloads"
    assert plural("knowledge-base article", 15) == "knowledge-base articles"


def test_spanish_customers_are_addressed_as_usted_in_every_text() -> None:
    assert TEXTS["es"]["prompt"] == (
        "Para vincular este chat con su WhatsApp, comparta su número de teléfono con el botón"
        " de abajo. Solo lo usamos para reconocerle."
    )
    shipped = yaml.safe_load((ROOT / "rules.yaml").read_text(encoding="utf-8"))
    spanish = list(TEXTS["es"].values()) + list(shipped["texts"]["languages"]["es"].values())
    spanish += [m["text"]["es"] for m in shipped["macros"] if "es" in m["text"]]
    for text in spanish:
        assert not INFORMAL.search(text.lower()), text
