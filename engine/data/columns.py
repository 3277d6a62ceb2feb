"""Guess which columns of a table hold the prompt and the answer, from names and content.

Public data sets name their columns every which way (``label``/``Label``/``v1``,
``sentence``/``text``/``message``) and put them in any order (the SMS spam collection has its
label first), so the first column is a poor guess. Names decide when they are telling; else
the content does: a column with few distinct short values is the answer of a label task,
and the column with the longest free text is the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROMPT_NAMES = (
    "prompt",
    "text",
    "sentence",
    "input",
    "question",
    "message",
    "query",
    "instruction",
    "content",
    "document",
    "review",
    "comment",
    "body",
    "utterance",
    "sms",
    "tweet",
)
"""Column names that say "prompt", most telling first (compared in lower case)."""
ANSWER_NAMES = (
    "label",
    "answer",
    "output",
    "target",
    "completion",
    "response",
    "class",
    "category",
    "sentiment",
    "intent",
    "reference",
    "gold",
    "labels",
    "y",
)
"""Column names that say "answer", most telling first (compared in lower case)."""
NOT_ANSWERS = ("id", "idx", "index", "split", "source", "lang", "language", "url", "date", "title")
"""Columns with few distinct values that are still not what a task predicts."""
MAX_LABELS = 50
"""Most distinct values a column may have to pass for a label by its content."""
MAX_LABEL_CHARS = 40
"""Longest average value a column may have to pass for a label by its content."""


@dataclass(frozen=True)
class ColumnStats:
    """What a sample of one column's values looks like."""

    filled: int
    distinct: int
    mean_chars: float

    @property
    def label_like(self) -> bool:
        """Few distinct short values, each used more than once on average: a class label."""
        return (
            self.filled >= 4
            and 2 <= self.distinct <= min(MAX_LABELS, self.filled // 2)
            and self.mean_chars <= MAX_LABEL_CHARS
        )


def column_stats(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, ColumnStats]:
    """Per column: non-empty values, distinct values and mean length (as text) in ``rows``."""
    stats = {}
    for col in columns:
        values = [str(r[col]) for r in rows if r.get(col) not in (None, "")]
        mean = sum(map(len, values)) / len(values) if values else 0.0
        stats[col] = ColumnStats(len(values), len(set(values)), mean)
    return stats


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _by_name(columns: Sequence[str], names: Sequence[str], taken: set[str]) -> str | None:
    """The column named like ``names`` (whole name first, then one ``_``-separated word of it)."""
    free = [c for c in columns if c not in taken]
    for name in names:
        for col in free:
            if _norm(col) == name:
                return col
    for name in names:
        for col in free:
            if name in _norm(col).split("_"):
                return col
    return None


def guess_columns(
    columns: Sequence[str], rows: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, str | None]:
    """A first guess at the ``prompt`` and ``answer`` columns.

    Args:
        columns: the column names, in file order.
        rows: a sample of rows (a few hundred is plenty); without them only names count.

    Returns:
        ``{"prompt": column or None, "answer": column or None}``; no answer when nothing
        looks like one (prompts only).
    """
    if not columns:
        return {"prompt": None, "answer": None}
    stats = column_stats(columns, rows or [])
    prompt = _by_name(columns, PROMPT_NAMES, set())
    answer = _by_name(columns, ANSWER_NAMES, {prompt} if prompt else set())
    if prompt is None:  # the longest free text that is not the answer
        texts = [c for c in columns if c != answer and not stats[c].label_like and stats[c].filled]
        prompt = max(texts, key=lambda c: stats[c].mean_chars, default=None)
        prompt = prompt or next((c for c in columns if c != answer), columns[0])
    if answer is None:  # the column with the fewest distinct values that looks like a label
        labels = [c for c in columns if c != prompt and stats[c].label_like and _norm(c) not in NOT_ANSWERS]
        answer = min(labels, key=lambda c: stats[c].distinct, default=None)
    return {"prompt": prompt, "answer": answer}
