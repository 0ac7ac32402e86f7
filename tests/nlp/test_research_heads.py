"""The Chinese and Spanish heads the sandbox builds on this machine from research data (built
here from a tiny made-up stand-in of that data, in a scratch folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlp import research_heads
from nlp.languages import LanguageHeads, fit_char_head, judge
from tests.research_data import write_research_data

ZH_ANGRY = "外卖送得太慢，饭菜全凉了，太差劲了"
ZH_HAPPY = "很好吃，送得很快，非常满意"
ES_ANGRY = "El pedido llegó roto y nadie responde, una vergüenza"


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_research_data(tmp_path / "data")
    monkeypatch.setenv("DESK_DATA_DIR", str(root))
    return root


def test_the_plan_says_what_is_built_what_can_be_and_what_has_no_data(
    tmp_path: Path, data_root: Path
) -> None:
    local = tmp_path / "languages-local"
    nothing = research_heads.plan(local=local, data_root=tmp_path / "elsewhere")
    assert nothing.no_data == ("zh", "es") and nothing.to_build == nothing.built == ()
    assert nothing.data_dir == tmp_path / "elsewhere"
    here = research_heads.plan(local=local)  # DESK_DATA_DIR, as nlp/data.py finds the data
    assert here.to_build == ("zh", "es") and here.no_data == () and here.data_dir == data_root
    # Spanish data missing: Chinese is still built.
    (data_root / "xlmt_umsab_sentiment" / "spanish" / "val_labels.txt").unlink()
    part = research_heads.plan(local=local)
    assert (part.to_build, part.no_data) == (("zh",), ("es",))


def test_the_build_fits_both_heads_into_the_local_folder(tmp_path: Path, data_root: Path) -> None:
    local = tmp_path / "languages-local"
    meta = research_heads.build(["zh", "es"], local=local)
    assert sorted(p.name for p in local.iterdir()) == [
        "es-sentiment.npz",
        "meta.json",
        "zh-sentiment.npz",
    ]
    assert meta["training_command"] == "python -m nlp.research_heads build zh es (deskbot sandbox)"
    assert not meta["heads"]["zh-sentiment"]["shippable"]
    assert "no licence stated" in meta["heads"]["zh-sentiment"]["source"]
    heads = LanguageHeads.load(local)
    angry, happy = judge(ZH_ANGRY, "zh", heads), judge(ZH_HAPPY, "zh", heads)
    assert angry is not None and happy is not None
    assert (angry.sentiment, happy.sentiment) == ("negative", "positive")
    assert angry.model == f"{meta['version']}:zh-sentiment"
    assert angry.anger_source == "derived: 0.49 × P(negative)"
    es = judge(ES_ANGRY, "es", heads)
    assert es is not None and es.sentiment == "negative" and es.model.endswith(":es-sentiment")
    assert research_heads.plan(local=local).built == ("zh", "es")
    assert research_heads.plan(local=local).to_build == ()
    assert not list(tmp_path.glob(".languages-build-*"))  # the scratch folder is gone


def test_a_build_keeps_the_other_heads_of_the_folder_with_their_own_version(
    tmp_path: Path, data_root: Path
) -> None:
    local = tmp_path / "languages-local"
    local.mkdir()
    fit_char_head(["magnifique", "horrible", "super", "nul"], ["p", "n", "p", "n"]).save(
        local / "fr-sentiment.npz"
    )
    (local / "meta.json").write_text(
        json.dumps(
            {
                "version": "languages-old",
                "heads": {"fr-sentiment": {"language": "fr", "task": "sentiment"}},
            }
        )
    )
    research_heads.build(["es"], local=local)
    heads = LanguageHeads.load(local)
    assert heads.languages() == {"fr", "es"}
    assert heads.versions["fr-sentiment"] == "languages-old"
    assert heads.versions["es-sentiment"].startswith("languages-2")
    french = judge("horrible", "fr", heads)
    assert french is not None and french.model == "languages-old:fr-sentiment"


def test_needs_fit_tools_only_when_a_build_is_due_and_scikit_learn_is_missing(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(research_heads, "LOCAL", tmp_path / "languages-local")
    monkeypatch.setattr(research_heads, "can_fit", lambda: False)
    assert research_heads.main(["needs-fit-tools"]) == 0
    monkeypatch.setenv("DESK_MODEL", "rules")  # no model: nothing to fit for
    assert research_heads.main(["needs-fit-tools"]) == 1
    monkeypatch.delenv("DESK_MODEL")
    monkeypatch.setattr(research_heads, "can_fit", lambda: True)
    assert research_heads.main(["needs-fit-tools"]) == 1
    monkeypatch.setenv("DESK_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(research_heads, "can_fit", lambda: False)
    assert research_heads.main(["needs-fit-tools"]) == 1  # no data: nothing to install for
