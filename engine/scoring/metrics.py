"""Per-example metrics for student outputs, and their aggregation over a test split.

A metric is a function ``(task, output, reference) -> float`` registered for the answer
kinds it makes sense for (``text``, ``json``, ``label``). :func:`score` runs every metric
registered for the task's kind, so a new metric plugs in with one decorator::

    @register("starts_with_brace", kinds=("json",))
    def _starts_with_brace(task, output, reference):
        return float(output.lstrip().startswith("{"))

All scores are in ``[0, 1]``; :func:`aggregate` averages them over examples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from engine.specs import TaskSpec

MetricFn = Callable[[TaskSpec, str, str], float]
"""``(task, output, reference) -> score in [0, 1]``."""


@dataclass(frozen=True)
class Metric:
    """A registered metric: its name, the answer kinds it applies to, and its function."""

    name: str
    kinds: tuple[str, ...]
    fn: MetricFn


METRICS: dict[str, Metric] = {}
"""The registry, name -> metric, in registration order (which is also the column order)."""


def register(name: str, kinds: Iterable[str] = ("text", "json", "label")) -> Callable[[MetricFn], MetricFn]:
    """Decorator that adds a metric to :data:`METRICS` under ``name``.

    Args:
        name: Column name of the score (must be unique).
        kinds: The ``TaskSpec.output_kind`` values the metric applies to.

    Returns:
        The decorator; it returns the function unchanged.
    """

    def wrap(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, tuple(kinds), fn)
        return fn

    return wrap


def metric_names(task: TaskSpec) -> list[str]:
    """Names of the metrics that :func:`score` computes for ``task``."""
    return [m.name for m in METRICS.values() if task.output_kind in m.kinds]


# --------------------------------------------------------------------------- helpers
def normalize_ws(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``, or ``None`` when it is not exactly one JSON object.

    Deliberately strict (no fence stripping, no trailing prose): a student that wraps its
    answer in chatter has not produced a valid answer for a downstream parser either.
    """
    try:
        value = json.loads(text.strip())
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _canon(value: Any) -> Any:
    """A comparison form of a JSON value: whitespace-normalised strings, 2.0 == 2, sorted keys."""
    if isinstance(value, str):
        return normalize_ws(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in sorted(value.items())}
    return value


def _same(a: Any, b: Any) -> bool:
    # Compare through JSON text so that True never equals 1 (Python's bool is an int).
    return json.dumps(_canon(a), sort_keys=True) == json.dumps(_canon(b), sort_keys=True)


def _comparable_text(task: TaskSpec, text: str) -> str:
    """Text used for fuzzy matching: canonical JSON when it parses, else normalised text."""
    if task.output_kind == "json":
        obj = parse_json_object(text)
        if obj is not None:
            return json.dumps(_canon(obj), sort_keys=True, ensure_ascii=False)
    return normalize_ws(text)


# --------------------------------------------------------------------------- metrics
@register("exact_match")
def exact_match(task: TaskSpec, output: str, reference: str) -> float:
    """1 when the answer equals the reference.

    JSON answers are compared as parsed objects (key order and spacing do not matter);
    labels case-insensitively; text after whitespace normalisation.
    """
    if task.output_kind == "json":
        out, ref = parse_json_object(output), parse_json_object(reference)
        if out is not None and ref is not None:
            return float(_same(out, ref))
        if out is None and ref is not None:
            return 0.0
    if task.output_kind == "label":
        return float(normalize_ws(output).casefold() == normalize_ws(reference).casefold())
    return float(normalize_ws(output) == normalize_ws(reference))


@register("json_valid", kinds=("json",))
def json_valid(task: TaskSpec, output: str, reference: str) -> float:
    """1 when the answer parses as a JSON object."""
    return float(parse_json_object(output) is not None)


@register("field_accuracy", kinds=("json",))
def field_accuracy(task: TaskSpec, output: str, reference: str) -> float:
    """Fraction of fields whose value equals the reference's (0 for an invalid answer).

    The fields are ``task.json_fields`` when given (a field missing from both sides counts
    as equal), else the reference's own keys.
    """
    matches = field_matches(task, output, reference)
    if matches is None:
        return 0.0
    if not matches:
        return float(not parse_json_object(output))
    return sum(matches.values()) / len(matches)


def field_matches(
    task: TaskSpec, output: str, reference: str, every_key: bool = False
) -> dict[str, bool] | None:
    """Per field, whether the answer's value equals the reference's, as :func:`field_accuracy`
    compares them; None when either text is not a JSON object.

    Args:
        task: Its ``json_fields`` are the fields compared (else the reference's own keys).
        output: The answer.
        reference: The gold answer.
        every_key: Also compare every other key either object has (a key outside
            ``json_fields`` that only one side has, or that differs, is a mismatch).

    Returns:
        ``{field: equal}`` in field order; a field missing from both sides counts as equal.
    """
    out, ref = parse_json_object(output), parse_json_object(reference)
    if out is None or ref is None:
        return None
    fields = list(task.json_fields) or list(ref)
    if every_key:
        fields = list(dict.fromkeys([*fields, *ref, *out]))
    missing = object()
    matches = {}
    for name in fields:
        a, b = out.get(name, missing), ref.get(name, missing)
        matches[name] = (a is missing and b is missing) or (
            a is not missing and b is not missing and _same(a, b)
        )
    return matches


@register("label_valid", kinds=("label",))
def label_valid(task: TaskSpec, output: str, reference: str) -> float:
    """1 when the answer is one of the task's labels (case-insensitive)."""
    labels = {normalize_ws(label).casefold() for label in task.labels}
    return float(normalize_ws(output).casefold() in labels)


@register("fuzzy")
def fuzzy(task: TaskSpec, output: str, reference: str) -> float:
    """Normalised Indel similarity (``rapidfuzz.fuzz.ratio / 100``) of the two answers."""
    a, b = _comparable_text(task, output), _comparable_text(task, reference)
    if task.output_kind == "label":
        a, b = a.casefold(), b.casefold()
    return fuzz.ratio(a, b) / 100.0


# --------------------------------------------------------------------------- scoring
def score(task: TaskSpec, output: str, reference: str) -> dict[str, float]:
    """All metrics registered for ``task.output_kind``, for one example.

    Args:
        task: The task (its ``output_kind`` picks the metrics; JSON tasks use ``json_fields``).
        output: The student's answer.
        reference: The gold answer (a JSON string for JSON tasks).

    Returns:
        ``{metric name: score in [0, 1]}``.
    """
    return {
        m.name: float(m.fn(task, output, reference)) for m in METRICS.values() if task.output_kind in m.kinds
    }


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the rows that have it, plus ``n`` (the number of rows).

    Args:
        rows: Per-example score dicts as returned by :func:`score`.

    Returns:
        ``{metric: mean, ..., "n": len(rows)}``; only ``n`` when ``rows`` is empty.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for name, value in row.items():
            sums[name] = sums.get(name, 0.0) + float(value)
            counts[name] = counts.get(name, 0) + 1
    out = {name: sums[name] / counts[name] for name in sums}
    out["n"] = float(len(rows))
    return out
