"""Diversity and balance of a dataset: lengths, label/field distributions, near-duplicates,
and balanced sampling of a training set.

Everything here is cheap (no model): the Data page calls it on every view. Sentence
embeddings, clusters and the 2-D map live in :mod:`engine.data.embeddings`, which loads its
model only when asked.

Example::

    frame = length_frame(store.get_examples(dataset_id))
    length_summary(frame)  # mean / median / p90 / max of chars and words, per field
    field_distributions(examples, task)  # label or JSON-field value counts
    balanced_sample(train, field_key(task, "intent"), n=200, seed=0)
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import plotly.graph_objects as go

from engine.access import Actor, Right, check, done
from engine.data.datasets import dataset_hash
from engine.data.dedup import DEFAULT_THRESHOLD, near_duplicate_groups, similarity
from engine.data.validate import parse_output
from engine.specs import TaskSpec
from engine.store import Store
from engine.words import plural

T = TypeVar("T")
MISSING = "(missing)"
"""Value shown for an example whose answer lacks the field (or has no answer at all)."""
INVALID = "(invalid)"
"""Value shown for an answer that does not parse for the task (not JSON, unknown label)."""
MAX_EXTRA_DISTINCT = 50
"""Extra source columns with more distinct values than this are not treated as fields."""


# --------------------------------------------------------------------------- lengths
def length_frame(examples: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per example and text field: ``idx, split, field, chars, words``.

    ``field`` is ``input`` (the prompt text) or ``output`` (the reference answer, when the
    example has one); ``words`` counts whitespace-separated tokens.
    """
    rows = []
    for ex in examples:
        for fld, text in (("input", ex.get("input")), ("output", ex.get("reference"))):
            if text is not None:
                rows.append(
                    {
                        "idx": ex.get("idx"),
                        "split": ex.get("split"),
                        "field": fld,
                        "chars": len(text),
                        "words": len(text.split()),
                    }
                )
    return pd.DataFrame(rows, columns=["idx", "split", "field", "chars", "words"])


def length_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per field and unit: ``count, mean, median, p90, max`` (from :func:`length_frame`)."""
    out = []
    for (fld, unit), values in ((k, frame.loc[frame["field"] == k[0], k[1]]) for k in _FIELD_UNITS):
        if len(values):
            out.append(
                {
                    "field": fld,
                    "unit": unit,
                    "count": len(values),
                    "mean": round(float(values.mean()), 1),
                    "median": float(values.median()),
                    "p90": float(values.quantile(0.9)),
                    "max": int(values.max()),
                }
            )
    return pd.DataFrame(out, columns=["field", "unit", "count", "mean", "median", "p90", "max"])


_FIELD_UNITS = [("input", "chars"), ("input", "words"), ("output", "chars"), ("output", "words")]


def length_histogram(frame: pd.DataFrame, unit: str = "words", bins: int = 30) -> go.Figure:
    """Histograms of input and output lengths in ``unit`` (``chars`` or ``words``), side by side.

    Side by side rather than overlaid: answers are often much shorter and more uniform than
    prompts, and one tall bar would flatten the other distribution.
    """
    from plotly.subplots import make_subplots

    fields = [f for f in ("input", "output") if (frame["field"] == f).any()] or ["input"]
    titles = [f"{f} ({int((frame['field'] == f).sum())} examples)" for f in fields]
    fig = make_subplots(rows=1, cols=len(fields), subplot_titles=titles, horizontal_spacing=0.08)
    colors = {"input": "#2f6fde", "output": "#f08a24"}
    for col, fld in enumerate(fields, start=1):
        values = frame.loc[frame["field"] == fld, unit]
        fig.add_histogram(x=values, nbinsx=bins, marker_color=colors[fld], name=fld, row=1, col=col)
        # From zero, so a field whose lengths barely vary shows a narrow bar, not a wall.
        fig.update_xaxes(title_text=f"length ({unit})", rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text="examples", row=1, col=1)
    fig.update_layout(height=300, showlegend=False, bargap=0.05, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


# ---------------------------------------------------------------------- distributions
@dataclass(frozen=True)
class FieldDistribution:
    """How often each value of one field occurs.

    Attributes:
        field: ``label``, a JSON answer field, or ``extra.<column>`` (an unmapped source column).
        counts: ``(value, count)``, most common first.
        total: examples counted (including ``(missing)``/``(invalid)``).
    """

    field: str
    counts: list[tuple[str, int]]
    total: int

    @property
    def distinct(self) -> int:
        """Distinct values."""
        return len(self.counts)

    @property
    def categorical(self) -> bool:
        """Few enough distinct values for a bar chart and for balancing (not an id-like field)."""
        return self.distinct <= MAX_EXTRA_DISTINCT and self.distinct < max(2, 0.8 * self.total)

    def frame(self, top: int = 30) -> pd.DataFrame:
        """The ``top`` most common values: ``value, count, share``."""
        rows = [(v, c, round(c / self.total, 3)) for v, c in self.counts[:top]]
        return pd.DataFrame(rows, columns=["value", "count", "share"])


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)


def field_values(task: TaskSpec, example: dict[str, Any]) -> dict[str, str]:
    """The field values of one example: its label or JSON answer fields, and extra columns."""
    out: dict[str, str] = {}
    ref = example.get("reference")
    if task.output_kind == "label":
        ok, label = parse_output(task, ref)
        out["label"] = MISSING if ref is None else (label if ok else INVALID)
    elif task.output_kind == "json":
        ok, obj = parse_output(task, ref, require_fields=False)
        for fld in task.json_fields:
            out[fld] = MISSING if ref is None else (INVALID if not ok else _value(obj.get(fld, MISSING)))
        if ok:
            for key, v in obj.items():
                out.setdefault(key, _value(v))
    extra = (example.get("meta") or {}).get("extra") or {}
    for col, v in extra.items():
        if v is None or isinstance(v, str | int | float | bool):
            out[f"extra.{col}"] = MISSING if v is None else str(v)
    return out


def field_distributions(examples: Sequence[dict[str, Any]], task: TaskSpec) -> list[FieldDistribution]:
    """Value counts of every field (label, JSON answer fields, extra columns), in field order.

    JSON fields that only some answers have count the rest as ``(missing)``.
    """
    per_example = [field_values(task, ex) for ex in examples]
    order: dict[str, None] = {}
    for values in per_example:
        order.update(dict.fromkeys(values))
    out = []
    for fld in sorted(order, key=lambda f: f.startswith("extra.")):  # answer fields first
        counts = Counter(values.get(fld, MISSING) for values in per_example)
        out.append(FieldDistribution(fld, counts.most_common(), len(per_example)))
    return out


def distribution_figure(dist: FieldDistribution, top: int = 20) -> go.Figure:
    """Horizontal bar chart of a field's most common values."""
    frame = dist.frame(top).iloc[::-1]
    fig = go.Figure(
        go.Bar(x=frame["count"], y=frame["value"].str.slice(0, 40), orientation="h", marker_color="#2f6fde")
    )
    fig.update_layout(
        title={"text": f"{dist.field} ({dist.distinct} values)", "font": {"size": 14}},
        height=90 + 26 * len(frame),
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        xaxis_title="examples",
        yaxis={"type": "category", "dtick": 1, "automargin": True},  # every label, none skipped
    )
    return fig


def field_key(task: TaskSpec, fld: str) -> Callable[[dict[str, Any]], str]:
    """A key function for :func:`balanced_sample`: an example's value of ``fld``."""
    return lambda ex: field_values(task, ex).get(fld, MISSING)


# --------------------------------------------------------------------- near-duplicates
def near_duplicates(examples: Sequence[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Near-duplicate prompts (see :mod:`engine.data.dedup`), one row per group member.

    Columns: ``group`` (1-based), ``size``, ``idx``, ``split``, ``similarity`` (to the
    group's first member), ``crosses_split`` (the group has train and test members: a leak),
    ``input``. Empty when there are no near-duplicates.
    """
    texts = [ex["input"] for ex in examples]
    rows = []
    for g, group in enumerate(near_duplicate_groups(texts, threshold), start=1):
        splits = {examples[i].get("split") for i in group}
        for i in group:
            rows.append(
                {
                    "group": g,
                    "size": len(group),
                    "idx": examples[i].get("idx", i),
                    "split": examples[i].get("split"),
                    "similarity": round(similarity(texts[group[0]], texts[i]), 2),
                    "crosses_split": {"train", "test"} <= splits,
                    "input": texts[i],
                }
            )
    cols = ["group", "size", "idx", "split", "similarity", "crosses_split", "input"]
    return pd.DataFrame(rows, columns=cols)


def duplicates_summary(dups: pd.DataFrame) -> str:
    """One sentence about a :func:`near_duplicates` table (groups, prompts, split leaks)."""
    if dups.empty:
        return "No near-duplicate prompts at this threshold."
    crossing = dups.loc[dups["crosses_split"], "group"].nunique()
    text = f"{plural(dups['group'].nunique(), 'group')} holding {plural(len(dups), 'prompt')}"
    spans = "spans" if crossing == 1 else "span"
    return text + (f"; **{plural(crossing, 'group')} {spans} train and test** (a leak)." if crossing else ".")


# ------------------------------------------------------------------- balanced sampling
def balanced_quotas(sizes: dict[Hashable, int], n: int, seed: int = 0) -> dict[Hashable, int]:
    """How many items to take from each group so the counts are as even as possible.

    Water-filling: every group gets the same share, a group smaller than the share gives
    all it has and its unused share goes to the others; the last few items left over by an
    uneven division go to randomly chosen (``seed``) groups that still have items.

    Args:
        sizes: group -> items available.
        n: items wanted in total (capped at the number available).
        seed: seed for the leftover items.

    Returns:
        group -> items to take; the values sum to ``min(n, sum(sizes))``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    remaining = min(n, sum(sizes.values()))
    quotas = dict.fromkeys(sizes, 0)
    order = sorted(sizes, key=lambda g: (sizes[g], str(g)))
    for i, g in enumerate(order):
        share = remaining // (len(order) - i)
        quotas[g] = min(sizes[g], share)
        remaining -= quotas[g]
    spare = [g for g in sorted(sizes, key=str) if quotas[g] < sizes[g]]
    random.Random(f"sensei-balance:{seed}").shuffle(spare)
    for g in spare[:remaining]:  # fewer leftovers than groups with room, by construction
        quotas[g] += 1
    return quotas


def balanced_sample(examples: Sequence[T], key_fn: Callable[[T], Hashable], n: int, seed: int = 0) -> list[T]:
    """Sample ``n`` examples spread as evenly as possible over the values of ``key_fn``.

    With labels ``a`` x 90, ``b`` x 8, ``c`` x 2 and ``n=30`` the sample holds 20 ``a``,
    8 ``b`` and 2 ``c`` (``b`` and ``c`` give all they have, ``a`` fills the rest), where a
    uniform sample would hold about 27, 2 and 1. Use it to keep a rare label from vanishing
    from a small training set.

    Args:
        examples: the pool (e.g. a dataset's train split).
        key_fn: the group of an example (a label, a field value, a cluster id).
        n: sample size (the whole pool when it has fewer).
        seed: the same seed gives the same sample.

    Returns:
        The sampled examples, in pool order.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(key_fn(ex), []).append(i)
    quotas = balanced_quotas({g: len(m) for g, m in groups.items()}, n, seed)
    rng = random.Random(f"sensei-sample:{seed}")
    chosen: list[int] = []
    for g in sorted(groups, key=str):
        chosen.extend(rng.sample(groups[g], quotas[g]))
    return [examples[i] for i in sorted(chosen)]


def balance_frame(
    examples: Sequence[T], sample: Sequence[T], key_fn: Callable[[T], Hashable]
) -> pd.DataFrame:
    """Counts per group before and after sampling: ``value, pool, sample``."""
    pool, got = Counter(map(key_fn, examples)), Counter(map(key_fn, sample))
    rows = [(str(v), c, got.get(v, 0)) for v, c in pool.most_common()]
    return pd.DataFrame(rows, columns=["value", "pool", "sample"])


def save_balanced_dataset(
    store: Store,
    dataset_id: str,
    key_fn: Callable[[dict[str, Any]], Hashable],
    n: int,
    seed: int = 0,
    *,
    actor: Actor,
) -> str:
    """Save a new dataset whose train split is a balanced sample of ``dataset_id``'s.

    The test split is copied unchanged (it stays the frozen yardstick); the new dataset is
    named ``<name>-balanced``, keeps the original order, and each example's
    ``meta["balanced_from"]`` keeps its original index. Identical content gives back the
    same dataset id (a "sample" of the whole train split is the dataset itself).

    Returns:
        The new (or identical existing) dataset's id.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not create datasets.
        KeyError: no such dataset.
    """
    check(store, actor, Right.LAUNCH, "create datasets", dataset_id)
    ds = store.get_dataset(dataset_id)
    if ds is None:
        raise KeyError(f"no dataset {dataset_id}")
    examples = store.get_examples(dataset_id)
    train = balanced_sample([e for e in examples if e["split"] == "train"], key_fn, n, seed)
    chosen = {e["idx"] for e in train}
    kept = [e for e in examples if e["split"] == "test" or e["idx"] in chosen]  # original order
    rows = [
        {
            "idx": i,
            "split": e["split"],
            "input": e["input"],
            "prompt": e["prompt"],
            "reference": e["reference"],
            "meta": {**(e.get("meta") or {}), "balanced_from": {"dataset": dataset_id, "idx": e["idx"]}},
        }
        for i, e in enumerate(kept)
    ]
    content = dataset_hash(ds["task"], [{k: v for k, v in r.items() if k != "meta"} for r in rows])
    new_id = store.save_dataset(f"{ds['name']}-balanced", content, ds["task"], rows)
    done(store, actor, "create balanced dataset", new_id, source=dataset_id, n=n)
    return new_id
