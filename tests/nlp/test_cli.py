"""`deskbot nlp classify` and `deskbot nlp train`: the contract other tools depend on.

These load the real encoder (all-MiniLM-L6-v2 from its PyPI package) and the shipped heads.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlp.cli import classify, main
from nlp.service import DEFAULT_HEADS, ModelError, TextAnalyser

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "intent",
    "intent_confidence",
    "best_intent",
    "sentiment",
    "sentiment_scores",
    "anger",
    "priority",
}


@pytest.fixture(scope="module")
def analyser() -> Iterator[TextAnalyser]:
    yield TextAnalyser.load()


def _classify(
    analyser: TextAnalyser, lines: list[str], tmp_path: Path
) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    code = classify(
        io.StringIO("\n".join(lines) + "\n"),
        out,
        model=None,
        rules_path=tmp_path / "no-rules.yaml",
        analyser=analyser,
    )
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_answer_per_line_in_order_with_fields_passed_through(
    analyser: TextAnalyser, tmp_path: Path
) -> None:
    texts = [
        "I want a refund for the order I cancelled last week",
        "Thank you so much, the delivery was quick and the support was wonderful!",
        "I forgot my password and can't log in",
    ] * 30  # more than one chunk
    lines = [json.dumps({"text": t, "id": i, "meta": {"k": [1, 2]}}) for i, t in enumerate(texts)]
    code, rows = _classify(analyser, lines, tmp_path)
    assert code == 0
    assert [r["id"] for r in rows] == list(range(len(texts)))
    assert all(r["meta"] == {"k": [1, 2]} and r["text"] == texts[r["id"]] for r in rows)
    for r in rows:
        assert r.keys() >= FIELDS
        assert r["sentiment"] in ("negative", "neutral", "positive")
        assert set(r["sentiment_scores"]) == {"negative", "neutral", "positive"}
        assert abs(sum(r["sentiment_scores"].values()) - 1) < 1e-3
        assert 0 <= r["anger"] <= 1 and 0 <= r["intent_confidence"] <= 1
        assert r["priority"] in ("urgent", "high", "normal", "low") and r["reasons"]
    refund, thanks, password = rows[:3]
    assert refund["intent"] == "get_refund"
    assert refund["priority"] == "high"
    assert "intent get_refund" in " ".join(refund["reasons"])
    assert thanks["sentiment"] == "positive"
    assert password["intent"] == "recover_password"


def test_an_angry_customer_is_urgent_with_the_reason(
    analyser: TextAnalyser, tmp_path: Path
) -> None:
    line = json.dumps({"text": "This is outrageous!!! You people are useless and I am furious"})
    _, [row] = _classify(analyser, [line], tmp_path)
    assert row["sentiment"] == "negative"
    assert row["anger"] >= 0.5
    assert row["priority"] == "urgent"
    assert row["reasons"][0].startswith("anger ")


def test_bad_lines_get_an_error_and_lose_nothing(analyser: TextAnalyser, tmp_path: Path) -> None:
    lines = ['{"text": "hello"}', "{not json", '{"txt": "x"}', "[1]", '{"text": "bye", "n": 5}']
    code, rows = _classify(analyser, lines, tmp_path)
    assert code == 1
    assert len(rows) == 5
    assert rows[0]["text"] == "hello" and "intent" in rows[0]
    assert rows[1]["error"].startswith("line 2: not JSON")
    assert rows[2]["error"] == 'line 3: each object needs a "text" string'
    assert rows[3]["error"] == "line 4: each line must be a JSON object"
    assert rows[4]["n"] == 5 and "intent" in rows[4]


def test_rules_yaml_example_intents_need_no_training(tmp_path: Path) -> None:
    analyser = TextAnalyser.load(
        extra_intents={
            "warranty_claim": ["my device broke within warranty", "is this covered by the warranty"]
        }
    )
    [a, b] = analyser.analyse_batch(
        ["my phone broke and it is still under warranty", "I want to cancel my order"]
    )
    assert a.intent == "warranty_claim"
    assert a.intent_confidence is not None and a.intent_confidence >= 0.6
    assert b.intent == "cancel_order"
    assert "+examples-" in a.model_version


def test_train_a_company_head_then_classify_with_it(tmp_path: Path) -> None:
    examples = {
        "lost_card": [
            "I lost my card",
            "my card is missing",
            "I can't find my bank card",
            "card lost yesterday",
            "someone has my card, I lost it",
        ],
        "exchange_rate": [
            "what is the exchange rate",
            "how much is a euro in dollars",
            "which rate do you use to convert currency",
            "exchange rate today",
            "conversion rate for pounds",
        ],
        "top_up": [
            "how do I top up",
            "add money to my account",
            "top up with a card",
            "my top up failed",
            "can I top up by bank transfer",
        ],
    }
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "team_label"])
        for label, texts in examples.items():
            w.writerows([t, label] for t in texts)
    out = tmp_path / "head"
    code = main(
        [
            "train",
            "--intents",
            str(path),
            "--text-column",
            "question",
            "--label-column",
            "team_label",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(meta["heads"]["intent"]["labels"]) == sorted(examples)
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "nlp", "classify", "--model", str(out)],
        input='{"text": "I have lost my debit card", "ticket": 7}\n'
        '{"text": "what rate do you give for yen"}\n',
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["intent"] for r in rows] == ["lost_card", "exchange_rate"]
    assert rows[0]["ticket"] == 7
    assert meta["version"] in rows[0]["model_version"]


def test_train_says_which_column_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("text,label\nhello,greet\n")
    code = main(
        ["train", "--intents", str(path), "--label-column", "intent", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "no column 'intent'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_heads_for_another_encoder_are_refused(tmp_path: Path) -> None:
    meta = {"version": "x", "encoder_fingerprint": "nope", "layers": [3, 6]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="trained on another encoder"):
        TextAnalyser.load(heads_dir=tmp_path)
    shipped = json.loads((DEFAULT_HEADS / "meta.json").read_text())
    company = {**meta, "encoder_fingerprint": shipped["encoder_fingerprint"], "layers": [6]}
    (tmp_path / "meta.json").write_text(json.dumps(company))
    with pytest.raises(ModelError, match=r"read layers \(6,\) of the encoder"):
        TextAnalyser.load(intent_dir=tmp_path)


def test_the_desk_refuses_to_start_on_a_bad_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main as deskbot

    monkeypatch.setenv("DESK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:sandbox")
    monkeypatch.setenv("TELEGRAM_API_BASE", "http://127.0.0.1:9")  # never reached
    monkeypatch.setenv("DESK_RULES", str(ROOT / "rules.yaml"))
    monkeypatch.setenv("DESK_MODEL", "local")
    monkeypatch.setenv("DESK_HEADS", str(tmp_path / "missing"))
    assert deskbot(["run"]) == 2
    err = capsys.readouterr().err
    assert f"deskbot: DESK_HEADS is {tmp_path / 'missing'}, which does not exist" in err
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("DESK_HEADS", str(tmp_path / "empty"))
    # Everything else in order, so that the model folder is what stops it.
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-sandbox")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "sandbox-secret")
    monkeypatch.setenv("SLACK_API_BASE", "http://127.0.0.1:9/api/")  # never reached
    assert deskbot(["run"]) == 2
    err = capsys.readouterr().err
    assert f"deskbot: {tmp_path / 'empty'} is not a model folder (no meta.json)" in err
