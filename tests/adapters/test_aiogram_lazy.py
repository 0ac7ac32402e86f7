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


def _read_all(first: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", READ_ALL.format(first=first), str(ROOT / "tests/payloads/telegram")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


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
