"""The Chinese and Spanish sentiment heads, built on this machine from research data.

Their data's terms forbid shipping a model trained on it (waimai_10k states no licence and its
note says not to redistribute or ship; XLM-T's Spanish is InterTASS, for research use), so the
heads are not in the repository. Where that data is beside the checkout (``../shared/data``,
or ``DESK_DATA_DIR``: :func:`nlp.data.data_dir`), ``deskbot sandbox`` fits the two heads once
into the git-ignored ``nlp/heads/languages-local`` (about 10 s on 2 cores; every research
language, ``deskbot nlp train --languages --research-data``, takes about 4 minutes), and the
desk loads them by default. The fit needs scikit-learn, which the runtime install leaves out:
``make sandbox`` installs the ``language-heads`` extra only when :func:`plan` says a build is
due (``python -m nlp.research_heads needs-fit-tools``).

    python -m nlp.research_heads needs-fit-tools   # exit 0: heads to build, no scikit-learn
    python -m nlp.research_heads build [zh es]     # fit them into nlp/heads/languages-local
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlp import data
from nlp.languages import LOCAL, LanguageHeads

# What the sandbox builds: the languages of its seed products' markets that have labelled
# sentiment data only under research terms (Russian's heads are shipped).
SANDBOX_LANGUAGES = ("zh", "es")
LANGUAGE_NAMES = {"zh": "Chinese", "es": "Spanish"}
# The files each head trains and is checked on, under data_dir().
DATA_FILES = {
    "zh": ("waimai10k_zh/waimai_10k.train.csv",),
    "es": tuple(
        f"xlmt_umsab_sentiment/spanish/{split}_{kind}.txt"
        for split in ("train", "val")
        for kind in ("text", "labels")
    ),
}
DATA_NAMES = {
    "zh": "waimai_10k (no licence stated)",
    "es": "XLM-T's Spanish (InterTASS, research use)",
}


@dataclass(frozen=True)
class Plan:
    """Where the sandbox's languages stand on this machine."""

    built: tuple[str, ...]  # a local head is there
    to_build: tuple[str, ...]  # missing, and its data is here
    no_data: tuple[str, ...]  # missing, and its data is not here
    can_fit: bool  # scikit-learn and SciPy are installed
    data_dir: Path


def plan(
    languages: Collection[str] = SANDBOX_LANGUAGES,
    *,
    local: Path | None = None,
    data_root: Path | None = None,
) -> Plan:
    local = local or LOCAL
    root = data_root or data.data_dir()
    try:
        found = (local / "meta.json").is_file()
        have = set(LanguageHeads.load(local).sentiment) if found else set()
    except (OSError, ValueError, KeyError):  # unreadable or built for other features: rebuild
        have = set()
    missing = [x for x in languages if x not in have]
    here = [x for x in missing if all((root / f).is_file() for f in DATA_FILES[x])]
    return Plan(
        built=tuple(x for x in languages if x in have),
        to_build=tuple(here),
        no_data=tuple(x for x in missing if x not in here),
        can_fit=can_fit(),
        data_dir=root,
    )


def wanted() -> bool:
    """Whether the desk would read local heads: not under ``DESK_MODEL=rules`` (no model) nor
    with ``DESK_LANGUAGE_HEADS`` (one folder of heads chosen by hand)."""
    return os.environ.get("DESK_MODEL") != "rules" and not os.environ.get("DESK_LANGUAGE_HEADS")


def can_fit() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("sklearn", "scipy"))


def build(languages: Collection[str], *, local: Path | None = None) -> dict[str, Any]:
    """Fit ``languages``' sentiment heads into ``local``, keeping any other heads there.

    They are fitted in a scratch folder beside it and moved in file by file with ``meta.json``
    last, so an interrupted build never leaves a ``meta.json`` naming a head that is not there
    (a first build interrupted leaves none, and the next start builds again)."""
    from nlp.train import train_languages

    local = local or LOCAL
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".languages-build-", dir=local.parent) as tmp:
        scratch = Path(tmp)
        # Only research languages: nothing is written to the shipped folder (the first path).
        train_languages(
            scratch / "unused", research_data=True, research_out=scratch, only=set(languages)
        )
        new: dict[str, Any] = json.loads((scratch / "meta.json").read_text(encoding="utf-8"))
        meta_path = local / "meta.json"
        old: dict[str, Any] = (
            json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        )
        # Heads already there keep their own version; the new ones carry the build's.
        heads: dict[str, Any] = {
            name: {"version": old.get("version", ""), **info}
            for name, info in old.get("heads", {}).items()
            if name not in new["heads"]
        }
        for name, info in new["heads"].items():
            heads[name] = {**info, "version": new["version"]}
        local.mkdir(parents=True, exist_ok=True)
        for name in new["heads"]:
            shutil.copyfile(scratch / f"{name}.npz", local / f".{name}.npz.tmp")
            (local / f".{name}.npz.tmp").replace(local / f"{name}.npz")
        command = f"python -m nlp.research_heads build {' '.join(languages)} (deskbot sandbox)"
        meta = {**new, "training_command": command, "heads": heads}
        (local / ".meta.json.tmp").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (local / ".meta.json.tmp").replace(meta_path)
    return meta


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["needs-fit-tools"]:
        if not wanted():
            return 1
        p = plan()
        return 0 if p.to_build and not p.can_fit else 1
    if args[:1] == ["build"]:
        languages = args[1:] or list(SANDBOX_LANGUAGES)
        meta = build(languages)
        for name in languages:
            info = meta["heads"][f"{name}-sentiment"]
            figures = ", ".join(f"{k} {v}" for k, v in info["validation"].items() if k != "split")
            print(f"{name}-sentiment: {figures} [{info['version']}]")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
