"""LLM judges: any OpenAI-compatible model grading answers against a rubric.

A judge is an evaluator like the metrics and rules: configured by a :class:`JudgeSpec`,
called through :class:`engine.teacher.client.ChatClient` (so it is cached, concurrent and
cost-accounted), and returning one structured :class:`Verdict` per item.

* pointwise: ``{"verdict": "accept" | "reject", "reason": "..."}`` per answer;
* pairwise: ``{"winner": "A" | "B" | "tie", "reason": "..."}``, asked in *both* orders; a
  judge that changes its mind when the answers swap places shows position bias, and the pair
  is scored a tie;
* reference-guided: with ``use_reference``, the reference answer (where an item has one) is
  shown to the judge.

The verdict parser is strict on purpose: the whole reply must be that JSON object (surrounding
whitespace and one Markdown code fence are tolerated). Anything else, including a reply cut
off by ``max_tokens``, is ``unparsable`` with the raw text kept, and never counts as accept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from engine.judges.prompts import pairwise_messages, pointwise_messages
from engine.specs import Spec, TeacherSpec
from engine.teacher.client import ChatClient, ChatResult, Messages

UNPARSABLE = "unparsable"
ERROR = "error"
_ALLOWED = {"verdict": ("accept", "reject"), "winner": ("A", "B", "tie")}
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL | re.IGNORECASE)


class JudgeSpec(Spec):
    """An LLM judge: which model, what it grades against, and how it is asked."""

    name: str = Field(default="judge", min_length=1, max_length=100)
    """Name shown in verdict tables and calibration reports."""
    endpoint: TeacherSpec
    """The judging model: any OpenAI-compatible endpoint (same fields as a teacher)."""
    rubric: str = Field(min_length=1, max_length=20_000)
    """What a good answer is, in the words of the people who know (one criterion per line)."""
    mode: Literal["pointwise", "pairwise"] = "pointwise"
    """``pointwise``: accept/reject each answer; ``pairwise``: pick the better of two answers."""
    use_reference: bool = False
    """Show the reference answer to the judge when an item has one."""


@dataclass(frozen=True)
class JudgeItem:
    """One answer to grade: the task input, the answer, and optionally a reference."""

    prompt: str
    output: str
    reference: str | None = None


@dataclass(frozen=True)
class PairItem:
    """Two answers to the same input to compare (``output_a`` is shown first in order 1)."""

    prompt: str
    output_a: str
    output_b: str
    reference: str | None = None


@dataclass(frozen=True)
class Verdict:
    """One judge reply.

    Attributes:
        verdict: ``accept``/``reject`` (pointwise) or ``A``/``B``/``tie`` (one pairwise order),
            ``unparsable`` (the reply is not the required JSON) or ``error`` (no reply).
        reason: the judge's reason, or why the reply could not be used.
        raw: the reply text exactly as received (None when the request failed).
        finish_reason: as reported by the endpoint (``length`` means cut off).
        cost_usd: what the call cost (0 when cached).
        cached: True when the reply came from the cache.
    """

    verdict: str
    reason: str
    raw: str | None = None
    finish_reason: str | None = None
    cost_usd: float = 0.0
    cached: bool = False

    @property
    def accepted(self) -> bool:
        """True only for a parsed ``accept``."""
        return self.verdict == "accept"

    @property
    def parsed(self) -> bool:
        """False for ``unparsable`` and ``error``."""
        return self.verdict not in (UNPARSABLE, ERROR)


@dataclass(frozen=True)
class PairVerdict:
    """A pairwise judgment combined over both presentation orders.

    Attributes:
        winner: ``A``, ``B``, ``tie``, ``unparsable`` or ``error`` (in the item's labels).
        reason: the judge's reason, or why the orders disagree.
        consistent: both orders gave the same winner.
        orders: the verdict with A shown first, then with B shown first; the second's
            ``verdict`` is already translated back to the item's labels (``raw`` is untouched).
    """

    winner: str
    reason: str
    consistent: bool
    orders: tuple[Verdict, Verdict]

    @property
    def cost_usd(self) -> float:
        """Cost of both calls."""
        return sum(v.cost_usd for v in self.orders)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {keys}")  # {"verdict": "reject", "verdict": "accept"}
    return dict(pairs)


def parse_verdict(
    text: str | None, finish_reason: str | None = None, key: Literal["verdict", "winner"] = "verdict"
) -> tuple[str, str]:
    """Read a judge reply strictly.

    Args:
        text: the reply.
        finish_reason: the endpoint's finish reason; ``length`` makes any reply unparsable.
        key: ``verdict`` (pointwise) or ``winner`` (pairwise).

    Returns:
        ``(verdict, reason)``; verdict is one of the allowed words for ``key`` or ``unparsable``,
        in which case ``reason`` says what was wrong.
    """
    if finish_reason == "length":
        return UNPARSABLE, "unparsable (truncated): the reply hit max_tokens"
    if text is None:
        return UNPARSABLE, "unparsable: empty reply"
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        obj = json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        return UNPARSABLE, "unparsable: the reply is not a single JSON object"
    if not isinstance(obj, dict) or set(obj) != {key, "reason"}:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        return UNPARSABLE, f"unparsable: expected exactly the keys {key!r} and 'reason', got {got}"
    value, reason = obj[key], obj["reason"]
    if not isinstance(value, str) or value not in _ALLOWED[key]:
        allowed = " | ".join(_ALLOWED[key])
        return UNPARSABLE, f"unparsable: {key} must be {allowed}, got {value!r}"
    if not isinstance(reason, str):
        return UNPARSABLE, "unparsable: reason must be a string"
    return value, reason.strip()


def _verdict(result: ChatResult, key: Literal["verdict", "winner"]) -> Verdict:
    # A reply cut off by max_tokens may come back with no content at all: still "truncated".
    if not result.ok and result.finish_reason != "length":
        reason = result.error or "no reply"
        return Verdict(ERROR, reason, result.content, result.finish_reason, result.cost_usd, result.cached)
    label, reason = parse_verdict(result.content, result.finish_reason, key)
    return Verdict(label, reason, result.content, result.finish_reason, result.cost_usd, result.cached)


async def ajudge_pointwise(
    client: ChatClient,
    judge: JudgeSpec,
    items: Sequence[JudgeItem],
    on_result: Callable[[int, ChatResult], None] | None = None,
) -> list[Verdict]:
    """Accept or reject each item's answer (async; see :func:`judge_pointwise`)."""
    requests = [pointwise_messages(judge, item) for item in items]
    results = await client.acomplete_many(requests, on_result)
    return [_verdict(r, "verdict") for r in results]


def judge_pointwise(
    client: ChatClient,
    judge: JudgeSpec,
    items: Sequence[JudgeItem],
    on_result: Callable[[int, ChatResult], None] | None = None,
) -> list[Verdict]:
    """Accept or reject each item's answer.

    Args:
        client: a chat client for ``judge.endpoint`` (it brings cache, concurrency and cost).
        judge: rubric and options.
        items: the answers to grade.
        on_result: progress callback, as in :meth:`ChatClient.complete_many`.

    Returns:
        One verdict per item, in order; unparsable replies are ``unparsable``, never accept.
    """
    return [
        _verdict(r, "verdict")
        for r in client.complete_many([pointwise_messages(judge, item) for item in items], on_result)
    ]


_SWAP = {"A": "B", "B": "A"}


def _combine(first: Verdict, swapped: Verdict) -> PairVerdict:
    # The swapped order showed B first, so its "A" means the item's B.
    second = Verdict(
        _SWAP.get(swapped.verdict, swapped.verdict),
        swapped.reason,
        swapped.raw,
        swapped.finish_reason,
        swapped.cost_usd,
        swapped.cached,
    )
    orders = (first, second)
    for bad in (ERROR, UNPARSABLE):
        broken = [f"order {i + 1}: {v.reason}" for i, v in enumerate(orders) if v.verdict == bad]
        if broken:
            return PairVerdict(bad, "; ".join(broken), False, orders)
    if first.verdict == second.verdict:
        return PairVerdict(first.verdict, first.reason, True, orders)
    reason = (
        f"position bias: with A shown first the judge said {first.verdict}, "
        f"with B shown first it said {second.verdict}; scored a tie"
    )
    return PairVerdict("tie", reason, False, orders)


def _pair_requests(judge: JudgeSpec, items: Sequence[PairItem]) -> list[Messages]:
    requests: list[Messages] = []
    for item in items:
        requests.append(pairwise_messages(judge, item, swap=False))
        requests.append(pairwise_messages(judge, item, swap=True))
    return requests


def _pairs(results: list[ChatResult]) -> list[PairVerdict]:
    return [
        _combine(_verdict(results[i], "winner"), _verdict(results[i + 1], "winner"))
        for i in range(0, len(results), 2)
    ]


async def ajudge_pairwise(
    client: ChatClient, judge: JudgeSpec, items: Sequence[PairItem]
) -> list[PairVerdict]:
    """Compare each item's two answers in both orders (async; see :func:`judge_pairwise`)."""
    return _pairs(await client.acomplete_many(_pair_requests(judge, items)))


def judge_pairwise(client: ChatClient, judge: JudgeSpec, items: Sequence[PairItem]) -> list[PairVerdict]:
    """Compare each item's two answers, asking A-vs-B and B-vs-A to cancel position bias.

    Both orders agree: that winner. They disagree: ``tie`` with a "position bias" reason.
    Either order unparsable (or failed): ``unparsable`` (or ``error``).

    Args:
        client: a chat client for ``judge.endpoint``.
        judge: rubric and options.
        items: the pairs to compare.

    Returns:
        One combined verdict per item, in order (2 judge calls each).
    """
    return _pairs(client.complete_many(_pair_requests(judge, items)))


def verdict_scores(verdicts: Sequence[Verdict], name: str = "judge") -> list[dict[str, float]]:
    """Per-example score rows, as :func:`engine.scoring.metrics.aggregate` expects.

    ``<name>_accept`` is 1 only for a parsed accept; ``<name>_unparsable`` flags replies that
    could not be used (unparsable or failed), so the aggregate reports them separately.
    """
    return [
        {f"{name}_accept": float(v.accepted), f"{name}_unparsable": float(not v.parsed)} for v in verdicts
    ]
