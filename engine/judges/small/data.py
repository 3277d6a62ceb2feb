"""Labelled items for the small judge: merging judge and SME labels, and the held-out split.

An item is ``{"text", "label", "source"}`` (plus optional ``"id"`` and ``"cost_usd"``):
``text`` is what the big judge saw (see :func:`judge_text`), ``label`` is ``accept`` or
``reject``, ``source`` is ``judge`` (the big judge's verdict) or ``sme`` (a subject-matter
expert's label). Items with the same ``id`` (or, without one, the same text) are one answer;
its SME label, where there is one, overrides the judge's, since SMEs are the ground truth the
judge itself is calibrated against.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.judges.prompts import _section

LABELS = ("reject", "accept")
"""Class index -> label; ``accept`` is class 1, the positive class as in calibration."""
SOURCES = ("judge", "sme")


def judge_text(prompt: str, output: str, reference: str | None = None) -> str:
    """The material the big judge grades, exactly as its pointwise user message shows it.

    Training the small judge on the same text the big judge saw (tags and all) keeps the two
    comparable; the rubric is the same for every item, so it is left out.
    """
    sections = [("input", prompt), ("reference", reference), ("answer", output)]
    return "\n\n".join(_section(tag, text) for tag, text in sections if text is not None)


@dataclass
class LabelledItem:
    """One answer with every label it has.

    Attributes:
        key: the item's ``id``, or its text when it has none.
        text: what the judge saw.
        judge: the big judge's verdict, if any.
        sme: the SME label, if any.
        judge_cost_usd: what the big judge's verdict cost, when given.
    """

    key: str
    text: str
    judge: str | None = None
    sme: str | None = None
    judge_cost_usd: float | None = None

    @property
    def label(self) -> str:
        """The training target: the SME label where there is one, else the judge's."""
        label = self.sme or self.judge
        assert label is not None  # merge_items never builds an unlabelled item
        return label


def merge_items(items: Iterable[Mapping[str, Any]]) -> tuple[list[LabelledItem], int]:
    """Group raw items by answer; SME labels override judge labels of the same answer.

    Args:
        items: ``{"text", "label", "source"="judge", "id"=None, "cost_usd"=None}`` dicts.
            A later label from the same source replaces an earlier one.

    Returns:
        The answers in first-seen order, and how many judge labels an SME label overrode
        (a different SME label on an answer the judge also labelled).

    Raises:
        ValueError: an item lacks text, or has a label or source outside the allowed words.
    """
    merged: dict[str, LabelledItem] = {}
    for i, raw in enumerate(items):
        text, label, source = raw.get("text"), raw.get("label"), raw.get("source", "judge")
        if not isinstance(text, str) or not text:
            raise ValueError(f"item {i}: 'text' must be a non-empty string")
        if label not in LABELS:
            raise ValueError(f"item {i}: label must be accept or reject, got {label!r}")
        if source not in SOURCES:
            raise ValueError(f"item {i}: source must be judge or sme, got {source!r}")
        key = str(raw.get("id") or text)
        item = merged.setdefault(key, LabelledItem(key=key, text=text))
        if source == "sme":
            item.sme = label
        else:
            item.judge = label
            cost = raw.get("cost_usd")
            item.judge_cost_usd = float(cost) if cost is not None else item.judge_cost_usd
    answers = list(merged.values())
    overrides = sum(1 for a in answers if a.sme and a.judge and a.sme != a.judge)
    return answers, overrides


def stratified_split(
    items: Sequence[LabelledItem], holdout: float, seed: int
) -> tuple[list[LabelledItem], list[LabelledItem]]:
    """Split into train and held-out parts with the same label mix in each.

    Each class keeps ``round(n_class * holdout)`` answers (at least one when the class has two
    or more) for the held-out part; the rest train. Same seed, same split.

    Raises:
        ValueError: fewer than two answers of each label, so one side would miss a class.
    """
    counts = Counter(it.label for it in items)
    if any(counts[label] < 2 for label in LABELS):
        raise ValueError(f"need at least 2 accepted and 2 rejected answers, got {dict(counts)}")
    rng = random.Random(seed)
    train: list[LabelledItem] = []
    test: list[LabelledItem] = []
    for label in LABELS:
        group = [it for it in items if it.label == label]
        rng.shuffle(group)
        k = min(len(group) - 1, max(1, round(len(group) * holdout)))
        test.extend(group[:k])
        train.extend(group[k:])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Items from a JSONL file (one object a line; blank lines skipped).

    Raises:
        ValueError: a line is not a JSON object (the message names the line).
    """
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not JSON ({err})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object")
            out.append(obj)
    return out
