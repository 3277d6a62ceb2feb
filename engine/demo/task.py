"""The demo task: short customer-support messages to a JSON ticket with four typed fields.

Messages are assembled from interchangeable parts (greeting, request, order number, urgency
cue, sign-off) whose order and wording vary, so the task needs real reading rather than a
fixed-position copy, yet stays small enough for a 2-layer student trained from scratch:
a message is at most about 25 words and prompt + answer fit well inside 128 BPE tokens.

Everything is drawn from one ``random.Random(seed)``, so a seed always gives the same data.

Example::

    >>> ex = generate_examples(1, seed=0)[0]
    >>> sorted(ex)
    ['input', 'meta', 'reference']
"""

from __future__ import annotations

import json
import random
from typing import Any

from engine.data.prompts import render_prompt

__all__ = [
    "DEMO_FIELDS",
    "DEMO_SYSTEM_PROMPT",
    "DEMO_TEMPLATE",
    "INTENTS",
    "PRODUCTS",
    "URGENCIES",
    "generate_examples",
    "make_reference",
    "render_prompt",
]

DEMO_FIELDS: tuple[str, ...] = ("intent", "product", "order_id", "urgency")
"""Keys of the answer object, in the order the reference JSON lists them."""

INTENTS: tuple[str, ...] = ("refund", "cancel", "shipping", "complaint", "upgrade")
PRODUCTS: tuple[str, ...] = ("laptop", "phone", "headphones", "tablet", "monitor", "keyboard")
URGENCIES: tuple[str, ...] = ("low", "medium", "high")

DEMO_SYSTEM_PROMPT = (
    "You turn customer support messages into tickets. Reply with one JSON object and nothing "
    "else, with keys intent (refund|cancel|shipping|complaint|upgrade), product "
    "(laptop|phone|headphones|tablet|monitor|keyboard), order_id (e.g. A01234) and urgency "
    "(low|medium|high)."
)
"""Sent to the teacher only; the student learns from the short template below."""

DEMO_TEMPLATE = "Extract the ticket fields as JSON.\nMessage: {input}\nJSON:"
"""Prompt template; deliberately short so the tiny student's 128-token window has room."""

# Surface forms per canonical product: the student must map synonyms onto one label.
_PRODUCT_WORDS: dict[str, tuple[str, ...]] = {
    "laptop": ("laptop", "notebook"),
    "phone": ("phone", "smartphone"),
    "headphones": ("headphones", "earbuds"),
    "tablet": ("tablet",),
    "monitor": ("monitor", "display"),
    "keyboard": ("keyboard",),
}

# Requests per intent; ``{p}`` is the product as the customer wrote it.
_INTENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "refund": (
        "I want a refund for my {p}.",
        "Please refund the {p} I bought.",
        "Can I get my money back for the {p}?",
        "I'd like to return the {p} for a refund.",
        "Requesting a refund on my {p}.",
        "The {p} isn't what I expected, I want my money back.",
    ),
    "cancel": (
        "Please cancel my order of the {p}.",
        "I need to cancel the {p} I ordered.",
        "I changed my mind, cancel the {p}.",
        "Cancel the {p} before it ships.",
        "I no longer want the {p}, please cancel.",
    ),
    "shipping": (
        "Where is my {p}?",
        "My {p} hasn't arrived yet.",
        "Any tracking update on the {p}?",
        "The {p} delivery is late.",
        "When will my {p} be delivered?",
    ),
    "complaint": (
        "My {p} stopped working.",
        "The {p} arrived broken.",
        "The {p} I got is damaged.",
        "Really unhappy with the quality of the {p}.",
        "My {p} keeps failing.",
    ),
    "upgrade": (
        "Can I upgrade my {p} to the pro model?",
        "I'd like to upgrade the {p}.",
        "Is there a premium {p} I can switch to?",
        "Please upgrade my {p} to the newer model.",
        "I want the better {p} instead.",
    ),
}

_ORDER_SENTENCES = (
    "Order {o}.",
    "Order number: {o}.",
    "My order is {o}.",
    "Ref {o}.",
    "Order #{o}.",
    "It was order {o}.",
)
_ORDER_INLINE = ("{p} (order {o})", "{p} ({o})", "{p} from order {o}")

# Medium urgency is often unmarked, as in real tickets: no cue means "medium".
_URGENCY_CUES: dict[str, tuple[str, ...]] = {
    "high": (
        "This is urgent.",
        "Please help asap!",
        "I need this sorted today.",
        "Urgent!",
        "Please reply immediately.",
        "ASAP please.",
    ),
    "medium": ("", "", "", "Please reply this week.", "Hope to hear back soon.", "Let me know soon."),
    "low": (
        "No rush.",
        "Whenever you can.",
        "Reply whenever you get a chance.",
        "Not urgent at all.",
        "No hurry.",
    ),
}

_GREETINGS = ("", "", "", "Hi,", "Hello,", "Hey team,", "Good morning,", "Hi there,")
_SIGN_OFFS = ("", "", "", "Thanks!", "Thank you.", "Cheers, Sam", "Best, Maria", "Regards, Ken")


def make_reference(meta: dict[str, Any]) -> str:
    """The canonical answer string: one JSON object, keys in :data:`DEMO_FIELDS` order."""
    return json.dumps({f: meta[f] for f in DEMO_FIELDS}, separators=(", ", ": "))


def _message(rng: random.Random, meta: dict[str, str]) -> str:
    product_word = rng.choice(_PRODUCT_WORDS[meta["product"]])
    request = rng.choice(_INTENT_TEMPLATES[meta["intent"]])
    order_sentence = ""
    if rng.random() < 0.35:
        # Order number inside the request sentence, next to the product.
        product_word = rng.choice(_ORDER_INLINE).format(p=product_word, o=meta["order_id"])
    else:
        order_sentence = rng.choice(_ORDER_SENTENCES).format(o=meta["order_id"])
    request = request.format(p=product_word)
    cue = rng.choice(_URGENCY_CUES[meta["urgency"]])

    # Field order varies: the urgency cue and order number may come before or after the request.
    body = [request]
    if order_sentence:
        body.insert(rng.choice((0, 1)), order_sentence)
    if cue:
        body.insert(rng.choice((0, len(body))), cue)
    parts = [rng.choice(_GREETINGS), *body, rng.choice(_SIGN_OFFS)]
    return " ".join(p for p in parts if p)


def generate_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Generate ``n`` labelled demo examples, identical for identical ``(n, seed)``.

    Args:
        n: number of examples.
        seed: random seed; the first ``k`` examples of ``n`` equal those of ``k``.

    Returns:
        Dicts with ``input`` (the message), ``reference`` (canonical JSON answer) and
        ``meta`` (the field values as a dict).
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        meta = {
            "intent": rng.choice(INTENTS),
            "product": rng.choice(PRODUCTS),
            "order_id": f"A{rng.randrange(100_000):05d}",
            "urgency": rng.choice(URGENCIES),
        }
        out.append({"input": _message(rng, meta), "reference": make_reference(meta), "meta": meta})
    return out
