"""Incident detection measured on bursts: one problem in many wordings, among unrelated messages.

A burst is one dominant complaint (many customers writing about the same thing) mixed with
unrelated messages, in a shuffled arrival order. Each message goes through the local model (the
encoder's sentence vector; its intent is only reported, to show how it scatters) and the
priority rules (urgent keyword), then through the same decisions the desk takes
(:func:`bot.domain.surge.decide`, with an open incident's mean vector and members kept as
bot/incidents/desk.py keeps them). Reported per burst and seed: the share of the related
messages attached to an incident, the unrelated ones attached, the incident cards holding the
related ones, and all the cards the surge put in the channel; then two outages at once, and
whether any ticket went into the other's incident.

Bursts, all from the shared training data (never the held-out splits):

* the written phrasing families of :mod:`bench.surge_families` (250 in eight wordings + 50
  unrelated ordinary requests), and ``twitter_site``: real airline tweets saying the website or
  app is down or failing;
* ``bitext``: 238 Bitext ``payment_issue`` utterances + 50 unrelated (other Bitext intents and
  airline tweets);
* ``twitter``: 250 airline tweets whose negative reason is "Cancelled Flight" + 50 unrelated
  (tweets with other reasons or none, and Bitext utterances).

    python -m bench.surge                  # the shipped settings, seeds 1, 2 and 13
    python -m bench.surge --grid           # and other similarity thresholds
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.surge_families import FAMILIES, family_burst
from bot.domain.rules import load_rules
from bot.domain.surge import MEMBERS, OpenIncident, Seen, Surges, decide, joined
from bot.incidents.desk import urgent_keyword
from nlp.data import data_dir
from nlp.priority import Signals
from nlp.priority import decide as priority

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Item:
    text: str
    related: bool
    keyword: str | None = None
    intent: str | None = None
    vector: np.ndarray | None = None


def _bitext(intent: str | None = None, exclude: str | None = None) -> list[str]:
    path = data_dir() / "bitext_customer_service"
    path = path / "Bitext_Sample_Customer_Service_Training_Dataset.csv"
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        r["utterance"]
        for r in rows
        if (intent is None or r["intent"] == intent) and (exclude is None or r["intent"] != exclude)
    ]


def _tweets(reason: str | None = None, exclude: str | None = None) -> list[str]:
    path = data_dir() / "twitter_airline_sentiment" / "Tweets.train.csv"
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        r["text"]
        for r in rows
        if (reason is None or r["negativereason"] == reason)
        and (exclude is None or r["negativereason"] != exclude)
    ]


def burst(name: str, related: int, unrelated: int, seed: int = 13) -> list[tuple[str, bool]]:
    rnd = random.Random(seed)
    if name == "bitext":
        pool = _bitext("payment_issue")  # 238 in the file
        same = rnd.sample(pool, min(related, len(pool)))
        half = unrelated // 2
        others = rnd.sample(_bitext(exclude="payment_issue"), half) + rnd.sample(
            _tweets(), unrelated - half
        )
    else:
        same = rnd.sample(_tweets("Cancelled Flight"), related)
        half = unrelated // 2
        others = rnd.sample(_tweets(exclude="Cancelled Flight"), half) + rnd.sample(
            _bitext(), unrelated - half
        )
    items = [(t, True) for t in same] + [(t, False) for t in others]
    rnd.shuffle(items)
    return items


def read(messages: Sequence[tuple[str, bool]]) -> list[Item]:
    """What the desk knows of each message: the rules' urgent keyword, the model's intent (when
    confident and not "other") and sentence vector."""
    from nlp.service import TextAnalyser

    rules = load_rules(ROOT / "rules.yaml")
    analyser = TextAnalyser.load()
    analyses = analyser.analyse_batch([t for t, _ in messages])
    least = rules.priority.intent_min_confidence
    items = []
    for (text, related), a in zip(messages, analyses, strict=True):
        keyword = urgent_keyword(priority(rules.priority, Signals(text=text)).reasons)
        confident = a.intent_confidence is not None and a.intent_confidence >= least
        intent = a.intent if a.intent not in (None, "other") and confident else None
        vector = None if a.vector is None else np.asarray(a.vector, dtype=np.float32)
        items.append(Item(text, related, keyword, intent, vector))
    return items


@dataclass(frozen=True)
class Outcome:
    attached_related: int
    missed: int
    wrongly_attached: int
    incidents: int  # incidents opened
    outage_cards: int  # incidents holding related messages: cards for the one outage
    cards: int  # cards the surge put in the channel: its incident cards + its tickets' own cards
    related: int
    crossed: int  # tickets in an incident most of whose tickets are of the other kind


def simulate(items: Sequence[Item], cfg: Surges, seconds_apart: float = 0.2) -> Outcome:
    """The desk's decisions in arrival order (bot/incidents/desk.py's IncidentDesk.place, in
    memory): an open incident keeps its mean vector and its members' vectors as the desk does."""
    seen: list[Seen] = []
    member: dict[int, int] = {}  # ticket → incident
    own_card: set[int] = set()  # tickets that got a card of their own
    incidents: dict[int, OpenIncident] = {}
    sizes: dict[int, int] = {}
    for n, it in enumerate(items):
        new = Seen(n, T0 + timedelta(seconds=n * seconds_apart), "s", it.keyword, it.vector)
        seen.append(new)
        recent = [s for s in seen[:-1] if s.ticket_id not in member]
        d = decide(new, recent, list(incidents.values()), cfg)
        if d.action == "alone":
            own_card.add(n)  # the group's first tickets keep theirs; the last one gets none
            continue
        group = (*d.together, n)
        vectors = [v for v in (seen[t].vector for t in group) if v is not None]
        if d.action == "open":
            iid = len(incidents) + 1
            keyword = it.keyword if d.why.startswith("shared urgent word") else None
            incidents[iid] = OpenIncident(iid, "s", keyword, d.centroid, tuple(vectors[-MEMBERS:]))
            sizes[iid] = len(group)
        elif d.incident_id is not None:
            iid = d.incident_id
            inc = incidents[iid]
            mean = inc.centroid
            for v in vectors:
                mean = joined(mean, sizes[iid], v)
                sizes[iid] += 1
            more = (*inc.members, *vectors)[-MEMBERS:]
            incidents[iid] = dataclasses.replace(inc, centroid=mean, members=more)
        for t in group:
            member[t] = iid
    related = sum(it.related for it in items)
    attached_related = sum(1 for t in member if items[t].related)
    share: dict[int, list[int]] = {}
    for t, i in member.items():
        share.setdefault(i, [0, 0])[items[t].related] += 1
    crossed = sum(min(pair) for pair in share.values())
    return Outcome(
        attached_related,
        related - attached_related,
        sum(1 for t in member if not items[t].related),
        len(incidents),
        len({i for t, i in member.items() if items[t].related}),
        len({i for t, i in member.items() if items[t].related})
        + sum(1 for t in own_card if items[t].related),
        related,
        crossed,
    )


BURSTS = (*(f.name for f in FAMILIES), "twitter_site", "bitext", "twitter")


def items_of(name: str, related: int, unrelated: int, seed: int) -> list[Item]:
    if name in ("bitext", "twitter"):
        return read(burst(name, related, unrelated, seed))
    return read(family_burst(name, related, unrelated, seed))


def two_at_once(a: list[Item], b: list[Item], seed: int = 5) -> list[Item]:
    """Two outages at once: a's surge (related) and b's (marked unrelated), with a's others."""
    mine = [it for it in a if it.related][:150]
    theirs = [dataclasses.replace(it, related=False) for it in b if it.related][:150]
    mixed = mine + theirs + [it for it in a if not it.related]
    random.Random(seed).shuffle(mixed)
    return mixed


PAIRS = (
    ("app_wont_load", "login_broken"),
    ("app_wont_load", "checkout_failing"),
    ("checkout_failing", "codes_not_arriving"),
    ("login_broken", "codes_not_arriving"),
    ("deliveries_late", "codes_not_arriving"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--related", type=int, default=250)
    parser.add_argument("--unrelated", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 13])
    parser.add_argument("--grid", action="store_true", help="also other settings than rules.yaml's")
    args = parser.parse_args()
    shipped = load_rules(ROOT / "rules.yaml").surges
    settings = [shipped]
    if args.grid:
        settings += [
            shipped.model_copy(update={"similarity": s, "incident_similarity": i})
            for s in (0.6, 0.65, 0.7)
            for i in (0.55, 0.58, 0.6, 0.62, 0.65)
            if (s, i) != (shipped.similarity, shipped.incident_similarity)
        ]
    read_in: dict[tuple[str, int], list[Item]] = {}
    for seed in args.seeds:
        for name in BURSTS:
            started = time.perf_counter()
            items = read_in[name, seed] = items_of(name, args.related, args.unrelated, seed)
            took = time.perf_counter() - started
            top: dict[str, int] = {}
            for it in items:
                if it.related and it.intent:
                    top[it.intent] = top.get(it.intent, 0) + 1
            common = ", ".join(
                f"{k} {v}" for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:3]
            )
            print(
                f"{name} (seed {seed}): {sum(it.related for it in items)} related +"
                f" {sum(not it.related for it in items)} unrelated, read in {took:.1f} s;"
                f" the related got {len(top)} intents ({common})"
            )
    print(
        "\nsimilarity  incident  burst               seed  related  attached"
        "  unrelated_attached  incident_cards  cards_in_channel"
    )
    for cfg in settings:
        for (name, seed), items in read_in.items():
            o = simulate(items, cfg)
            print(
                f"{cfg.similarity:>10.2f}  {cfg.incident_similarity:>8.2f}  {name:<18}"
                f"  {seed:>4d}  {o.related:>7d}  {o.attached_related / o.related:>8.1%}"
                f"  {o.wrongly_attached:>18d}  {o.outage_cards:>14d}  {o.cards:>16d}"
            )
    print("\ntwo outages at once (150 + 150 + 50 unrelated): tickets in the other's incident")
    for a, b in PAIRS:
        runs = [
            simulate(two_at_once(read_in[x, seed], read_in[y, seed]), shipped)
            for seed in args.seeds
            for x, y in ((a, b), (b, a))
        ]
        counts = sorted(o.incidents for o in runs)
        print(
            f"{a} + {b}: {len(runs)} runs, crossed {sum(o.crossed for o in runs)},"
            f" incidents {counts[0]}-{counts[-1]}"
        )


if __name__ == "__main__":
    main()
