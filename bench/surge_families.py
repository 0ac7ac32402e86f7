"""Phrasing families for measuring incident detection: one problem, many wordings.

Each written family is one thing going wrong for many customers at once, in eight phrasings
(written for this bench, not taken from any test split), varied the way a burst of real
messages varies: a greeting or none, a tail ("since this morning", "please fix"), lower case,
an order number. The unrelated messages mixed in are ordinary support requests from the shared
training data (Bitext, Banking77, CLINC150 in-scope, airline tweets), leaving out the few
intents that are the family's own topic (a Bitext ``recover_password`` request is not unrelated
to a login failure).

``twitter_site`` is real: airline tweets from the training split that say the airline's website
or app is down or failing (different airlines and days, so a looser family than one outage).
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass

from nlp.data import data_dir


@dataclass(frozen=True)
class Family:
    name: str
    phrasings: tuple[str, ...]
    close_intents: tuple[str, ...] = ()  # Bitext/Banking77 intents on the family's own topic


FAMILIES: tuple[Family, ...] = (
    Family(
        "app_wont_load",
        (
            "the app won't load",
            "your app keeps crashing as soon as I open it",
            "I can't open the app, it's stuck on a white screen",
            "is your website down? nothing loads",
            "the site isn't loading for me",
            "getting a 503 error on every page of your site",
            "the app just shows a spinning wheel and never opens",
            "cannot get into the app at all, it times out",
        ),
    ),
    Family(
        "checkout_failing",
        (
            "checkout keeps failing when I try to pay",
            "my card gets declined at checkout but it works everywhere else",
            "the payment page shows an error and won't take my money",
            "I can't complete my purchase, the pay button does nothing",
            "payment won't go through on your site",
            "tried three cards, all rejected at the payment step",
            "error 'transaction failed' every time I check out",
            "can't buy anything, the payment step is broken",
        ),
        ("payment_issue", "check_payment_methods", "place_order", "declined_card_payment"),
    ),
    Family(
        "login_broken",
        (
            "I can't log in, it says my password is wrong but it isn't",
            "login keeps failing with 'something went wrong'",
            "the sign in page just reloads and I'm never logged in",
            "I'm locked out, the login button does nothing",
            "can't sign into my account since this morning",
            "logging in gives me an 'invalid session' error",
            "it keeps logging me out straight after I sign in",
            "my login doesn't work anymore, neither on the web nor in the app",
        ),
        ("recover_password", "registration_problems", "switch_account", "passcode_forgotten"),
    ),
    Family(
        "codes_not_arriving",
        (
            "I'm not receiving the verification code by SMS",
            "the confirmation code never arrives",
            "still waiting for the 2FA text message",
            "your one-time password email isn't coming through",
            "no security code was sent to my phone",
            "I requested the code five times and nothing arrived",
            "the verification SMS doesn't come, I can't continue",
            "where is the code? never got it",
        ),
        ("recover_password", "registration_problems", "verify_my_identity", "pin_blocked"),
    ),
    Family(
        "deliveries_late",
        (
            "my parcel was supposed to arrive today and didn't",
            "the courier never showed up",
            "tracking has said 'out for delivery' since yesterday",
            "my order is late, it was due on Monday",
            "the package still hasn't been delivered",
            "delivery missed again, nobody came",
            "where's my package? it just says delayed",
            "the delivery window passed and no driver came",
        ),
        (
            "delivery_period",
            "track_order",
            "delivery_options",
            "card_arrival",
            "card_delivery_estimate",
        ),
    ),
)

HEADS = ("", "", "", "hi, ", "hello, ", "hey team, ", "Hi there! ", "help: ", "urgent - ", "ugh ")
TAILS = (
    "",
    "",
    "",
    " since this morning",
    " please fix it",
    ", what's going on?",
    "!!",
    " for the last hour",
    " (order {n})",
    ". Anyone else?",
    " again",
    " :(",
)


def written(family: Family, count: int, rnd: random.Random) -> list[str]:
    """``count`` messages of a family, its phrasings in turn, each varied."""
    out = []
    for i in range(count):
        text = family.phrasings[i % len(family.phrasings)]
        head, tail = rnd.choice(HEADS), rnd.choice(TAILS).format(n=rnd.randint(10000, 99999))
        text = head + (text[0].lower() + text[1:] if head else text) + tail
        if rnd.random() < 0.25:
            text = text.lower()
        out.append(text)
    rnd.shuffle(out)
    return out


SITE_DOWN = re.compile(
    r"\b(web ?site|site|app)\b[^.!?]{0,40}\b(down|not working|isn't working|won't load|"
    r"crash\w*|error\w*|broken)\b|\b(down|crash\w*|error\w*)\b[^.!?]{0,20}\b(web ?site|site|app)\b",
    re.I,
)


def tweets() -> list[dict[str, str]]:
    path = data_dir() / "twitter_airline_sentiment" / "Tweets.train.csv"
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def twitter_site() -> list[str]:
    """Airline tweets saying the website or app is down or failing (training split)."""
    return [r["text"] for r in tweets() if SITE_DOWN.search(r["text"])]


def unrelated(count: int, rnd: random.Random, leave_out: tuple[str, ...] = ()) -> list[str]:
    """Ordinary support requests: Bitext, Banking77, CLINC150 in-scope and airline tweets, in
    about equal parts, without the intents in ``leave_out``."""
    root = data_dir()
    with (
        root / "bitext_customer_service" / "Bitext_Sample_Customer_Service_Training_Dataset.csv"
    ).open(encoding="utf-8") as f:
        bitext = [r["utterance"] for r in csv.DictReader(f) if r["intent"] not in leave_out]
    with (root / "banking77" / "train.csv").open(encoding="utf-8") as f:
        banking = [r["text"] for r in csv.DictReader(f) if r["category"] not in leave_out]
    with (root / "clinc150" / "train.json").open(encoding="utf-8") as f:
        clinc = [text for text, _ in json.load(f)]
    airline = [r["text"] for r in tweets() if not SITE_DOWN.search(r["text"])]
    quarter = count // 4
    return (
        rnd.sample(bitext, quarter)
        + rnd.sample(banking, quarter)
        + rnd.sample(clinc, quarter)
        + rnd.sample(airline, count - 3 * quarter)
    )


def family_burst(
    name: str, related: int = 250, others: int = 50, seed: int = 13
) -> list[tuple[str, bool]]:
    """A burst: ``related`` messages of the family and ``others`` unrelated ones, shuffled."""
    rnd = random.Random(seed)
    if name == "twitter_site":
        pool = twitter_site()
        same = rnd.sample(pool, min(related, len(pool)))
        leave_out: tuple[str, ...] = ()
    else:
        family = next(f for f in FAMILIES if f.name == name)
        same = written(family, related, rnd)
        leave_out = family.close_intents
    items = [(t, True) for t in same] + [(t, False) for t in unrelated(others, rnd, leave_out)]
    rnd.shuffle(items)
    return items
