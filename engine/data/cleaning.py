"""Cleaning rules: small named functions over records, applied in order, each counted.

A rule either rewrites text (``strip_markup``, ``normalize_punctuation``,
``normalize_whitespace``) or drops rows (the others); a rewrite that leaves a prompt empty drops
the row too. Every dropped row keeps the rule and the reason::

    kept, dropped, counts = apply_rules(records, ["strip_markup", {"rule": "near_dedup", "threshold": 0.8}])
    counts[0]  # {"rule": "strip_markup", "params": {...}, "before": 120, "after": 119,
               #  "dropped": 1, "changed": 7}

Rules are registered by name (:data:`RULES`, :func:`list_rules`), so a page can offer them and
a spec can name them; a rule's parameters and their defaults come from its signature.
"""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from engine.data.dedup import near_duplicate_groups, normalize_text, similarity
from engine.data.report import Record

Dropped = list[tuple[Record, str]]
RuleFn = Callable[..., tuple[list[Record], Dropped, int]]
RuleSpec = str | dict[str, Any] | tuple[str, dict[str, Any]]
"""A rule by name, ``{"rule": name, **params}``, or ``(name, params)``."""


@dataclass(frozen=True)
class Rule:
    """A registered cleaning rule: ``fn(records, **params) -> (kept, dropped, changed)``."""

    name: str
    fn: RuleFn
    description: str
    params: dict[str, Any]


RULES: dict[str, Rule] = {}
"""Every rule by name."""


def rule(name: str, description: str) -> Callable[[RuleFn], RuleFn]:
    """Register a rule; its keyword parameters (with defaults) are the rule's parameters."""

    def register(fn: RuleFn) -> RuleFn:
        params = {
            p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY
        }
        RULES[name] = Rule(name, fn, description, params)
        fn.__doc__ = fn.__doc__ or f"{description}. Returns ``(kept, dropped with reasons, changed)``."
        return fn

    return register


def list_rules() -> list[dict[str, Any]]:
    """Every rule with its description and default parameters (for a page or the CLI)."""
    return [{"rule": r.name, "description": r.description, "params": dict(r.params)} for r in RULES.values()]


_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Approximate token count: words and punctuation marks (close to BPE counts for English)."""
    return len(_TOKEN.findall(text))


def where(record: Record, default: str = "") -> str:
    """Where a record came from, e.g. ``line 12`` or ``row 3``."""
    src = record["meta"].get("source") or {}
    for unit in ("line", "item", "row"):
        if unit in src:
            return f"{unit} {src[unit]}"
    return default


def _rewrite(
    records: list[Record], fields: Sequence[str], fn: Callable[[str], str], what: str
) -> tuple[list[Record], Dropped, int]:
    unknown = set(fields) - {"input", "output"}
    if unknown:
        raise ValueError(f"fields must be 'input' and/or 'output', not {sorted(unknown)}")
    kept: list[Record] = []
    dropped: Dropped = []
    changed = 0
    for rec in records:
        new = Record(input=rec["input"], output=rec["output"], meta=rec["meta"])
        for f in fields:
            value = rec[f]  # type: ignore[literal-required]
            if isinstance(value, str):
                new[f] = fn(value)  # type: ignore[literal-required]
        changed += new["input"] != rec["input"] or new["output"] != rec["output"]
        if not new["input"].strip():
            dropped.append((new, f"the prompt is empty after {what}"))
        else:
            kept.append(new)
    return kept, dropped, changed


_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_BREAK = re.compile(r"<(?:br|/p|/div|/li|/h[1-6]|/tr)\s*/?>", re.I)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)\s]*\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+", re.M)


def strip_markup_text(text: str) -> str:
    """Remove HTML tags and entities and markdown emphasis, links and heading marks."""
    text = _BREAK.sub("\n", text)
    text = html.unescape(_TAG.sub("", text))
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_EMPHASIS.sub(r"\2", text)
    return _MD_HEADING.sub("", text).strip()


@rule("strip_markup", "Remove HTML tags/entities and markdown emphasis, links and heading marks")
def strip_markup(
    records: list[Record], *, fields: Sequence[str] = ("input", "output")
) -> tuple[list[Record], Dropped, int]:
    return _rewrite(records, fields, strip_markup_text, "stripping markup")


_PUNCT = str.maketrans(
    {
        "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"',
        "»": '"', "–": "-", "—": "-", "―": "-", "‐": "-", "‑": "-", "−": "-", "…": "...",
        "\u00a0": " ", "\u202f": " ", "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
    }
)  # fmt: skip


@rule("normalize_punctuation", "Straight quotes, plain dashes and dots, no invisible characters")
def normalize_punctuation(
    records: list[Record], *, fields: Sequence[str] = ("input", "output")
) -> tuple[list[Record], Dropped, int]:
    return _rewrite(records, fields, lambda t: t.translate(_PUNCT), "normalising punctuation")


_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


@rule("normalize_whitespace", "Trim, collapse runs of spaces, at most one blank line in a row")
def normalize_whitespace(
    records: list[Record], *, fields: Sequence[str] = ("input", "output")
) -> tuple[list[Record], Dropped, int]:
    def fix(text: str) -> str:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n"))
        return _BLANK_LINES.sub("\n\n", text).strip()

    return _rewrite(records, fields, fix, "normalising whitespace")


def _filter(records: list[Record], why: Callable[[Record], str | None]) -> tuple[list[Record], Dropped, int]:
    kept: list[Record] = []
    dropped: Dropped = []
    for rec in records:
        reason = why(rec)
        if reason is None:
            kept.append(rec)
        else:
            dropped.append((rec, reason))
    return kept, dropped, 0


@rule("min_output_tokens", "Drop rows whose reference answer is shorter than n tokens")
def min_output_tokens(
    records: list[Record], *, n: int = 1, drop_missing: bool = False
) -> tuple[list[Record], Dropped, int]:
    def why(rec: Record) -> str | None:
        if rec["output"] is None:
            return "no reference answer" if drop_missing else None
        k = count_tokens(rec["output"])
        return f"answer has {k} tokens (< {n})" if k < n else None

    return _filter(records, why)


@rule("instruction_equals_input", "Drop rows whose instruction and input say the same thing")
def instruction_equals_input(
    records: list[Record], *, threshold: float = 0.9
) -> tuple[list[Record], Dropped, int]:
    def why(rec: Record) -> str | None:
        instruction, context = rec["meta"].get("instruction"), rec["meta"].get("context")
        if not instruction or not context:
            return None
        sim = similarity(instruction, context)
        return f"instruction ≈ input (similarity {sim:.2f} >= {threshold:g})" if sim >= threshold else None

    return _filter(records, why)


@rule("exact_dedup", "Drop exact duplicates (after normalising case, punctuation and spacing)")
def exact_dedup(records: list[Record], *, key: str = "input") -> tuple[list[Record], Dropped, int]:
    if key not in ("input", "input+output"):
        raise ValueError("exact_dedup: key must be 'input' or 'input+output'")
    seen: dict[str, str] = {}

    def why(rec: Record) -> str | None:
        text = normalize_text(rec["input"])
        if key == "input+output":
            text += "\x00" + normalize_text(rec["output"] or "")
        if text in seen:
            return f"exact duplicate of {seen[text]}"
        seen[text] = where(rec, "an earlier row")
        return None

    return _filter(records, why)


@rule("near_dedup", "Drop near-duplicate prompts (character 5-gram Jaccard >= threshold), keep the first")
def near_dedup(records: list[Record], *, threshold: float = 0.8) -> tuple[list[Record], Dropped, int]:
    texts = [r["input"] for r in records]
    keeper = {}
    for group in near_duplicate_groups(texts, threshold):
        for i in group[1:]:
            keeper[i] = group[0]
    dropped: Dropped = []
    for i, k in sorted(keeper.items()):
        sim = similarity(texts[i], texts[k])
        dropped.append(
            (records[i], f"near-duplicate of {where(records[k], f'example {k + 1}')} (similarity {sim:.2f})")
        )
    return [r for i, r in enumerate(records) if i not in keeper], dropped, 0


@rule("length_limits", "Drop rows whose prompt or answer is outside the token limits")
def length_limits(
    records: list[Record],
    *,
    min_input_tokens: int = 1,
    max_input_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> tuple[list[Record], Dropped, int]:
    def why(rec: Record) -> str | None:
        k = count_tokens(rec["input"])
        if k < min_input_tokens:
            return f"prompt has {k} tokens (< {min_input_tokens})"
        if max_input_tokens is not None and k > max_input_tokens:
            return f"prompt has {k} tokens (> {max_input_tokens})"
        if max_output_tokens is not None and rec["output"] is not None:
            k = count_tokens(rec["output"])
            if k > max_output_tokens:
                return f"answer has {k} tokens (> {max_output_tokens})"
        return None

    return _filter(records, why)


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of a parameter's ``default`` (None fits anything)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and (isinstance(default, float) or isinstance(value, int))
    if isinstance(default, tuple | list):
        return isinstance(value, tuple | list)
    return isinstance(value, type(default))


def resolve_rules(rules: Sequence[RuleSpec]) -> list[tuple[Rule, dict[str, Any]]]:
    """Validate rule specs into (rule, full params) pairs.

    Raises:
        ValueError: an unknown rule or parameter, or a parameter of the wrong type.
    """
    out = []
    for spec in rules:
        if isinstance(spec, str):
            name, given = spec, {}
        elif isinstance(spec, dict):
            given = {k: v for k, v in spec.items() if k != "rule"}
            name = spec.get("rule", "")
        else:
            name, given = spec
        if name not in RULES:
            raise ValueError(f"unknown cleaning rule {name!r}; known: {', '.join(RULES)}")
        r = RULES[name]
        for k, v in given.items():
            if k not in r.params:
                raise ValueError(f"rule {name}: unknown parameter {k!r}; parameters: {', '.join(r.params)}")
            if not _fits(v, r.params[k]):
                raise ValueError(f"rule {name}: {k} must be like {r.params[k]!r}, got {v!r}")
        out.append((r, {**r.params, **given}))
    return out


class CleaningResult(NamedTuple):
    """What :func:`apply_rules` returns (unpacks as ``kept, dropped, counts``)."""

    kept: list[Record]
    dropped: list[dict[str, Any]]
    counts: list[dict[str, Any]]


def apply_rules(records: list[Record], rules: Sequence[RuleSpec]) -> CleaningResult:
    """Apply cleaning rules in order.

    Args:
        records: the records (not modified).
        rules: rule specs, e.g. ``["strip_markup", {"rule": "near_dedup", "threshold": 0.8}]``.

    Returns:
        ``kept`` records; ``dropped`` rows as dicts (``rule, reason, where, input, output, meta``);
        ``counts``, one dict per rule: ``rule, params, before, after, dropped, changed``.
    """
    kept = list(records)
    dropped: list[dict[str, Any]] = []
    counts: list[dict[str, Any]] = []
    for r, params in resolve_rules(rules):
        before = len(kept)
        kept, gone, changed = r.fn(kept, **params)
        for rec, reason in gone:
            dropped.append({"rule": r.name, "reason": reason, "where": where(rec), **rec})
        counts.append(
            {
                "rule": r.name,
                "params": params,
                "before": before,
                "after": len(kept),
                "dropped": len(gone),
                "changed": changed,
            }
        )
    return CleaningResult(kept, dropped, counts)
