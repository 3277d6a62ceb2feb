"""Judge calibration from the store: SME labels paired with stored judge verdicts.

The SME side of each item is :func:`engine.review.items.sme_consensus` over the annotators' current
labels (or one annotator's label); the judge side is the verdict saved with
:meth:`engine.store.Store.save_judge_verdicts`. Only items that have both count, and when two
judges are compared only items all of them judged, so both face the same SME set. The
statistics themselves are :mod:`engine.judges.calibration`'s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from engine.judges.calibration import (
    JUDGE_LABELS,
    METRICS,
    Calibration,
    Interval,
    JudgeComparison,
    calibrate,
    compare_judges,
)
from engine.review.items import parse_ref, sme_consensus
from engine.store import Store


@dataclass
class CalibrationSet:
    """Items with an SME label and a verdict from every judge asked for, aligned by position."""

    refs: list[str] = field(default_factory=list)
    sme: list[dict[str, Any]] = field(default_factory=list)
    """The SME label row behind each item's verdict (``label``, ``category``, ``note``, ...)."""
    verdicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """judge name -> its verdict row for each item."""

    @property
    def labels(self) -> list[str]:
        """The SME accept/reject per item."""
        return [s["label"] for s in self.sme]

    @property
    def categories(self) -> list[str | None]:
        """The SME error category per item (None for none)."""
        return [s["category"] for s in self.sme]


def sme_labels(store: Store, prefix: str | None = None, annotator: str | None = None) -> dict[str, dict]:
    """item ref -> the SME label that counts: ``annotator``'s, or the consensus of all."""
    current: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in store.annotations(prefix=prefix, annotator=annotator):
        current[a["item_ref"]].append(a)
    return {ref: row for ref, rows in current.items() if (row := sme_consensus(rows))}


def pointwise_judges(store: Store) -> list[str]:
    """Judges with accept/reject verdicts (pairwise winners cannot be calibrated this way)."""
    return sorted({v["judge_name"] for v in store.list_judge_verdicts() if v["verdict"] in JUDGE_LABELS})


def calibration_set(
    store: Store,
    judges: Sequence[str],
    prefix: str | None = None,
    annotator: str | None = None,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> CalibrationSet:
    """The items labelled by SMEs and judged by every one of ``judges``, sorted by ref.

    ``exclude``: refs to leave out (e.g. the answers a small judge was trained on).
    """
    sme = sme_labels(store, prefix, annotator)
    by_judge = {
        j: {v["item_ref"]: v for v in store.list_judge_verdicts(j, prefix) if v["verdict"] in JUDGE_LABELS}
        for j in judges
    }
    refs = sorted(r for r in sme if r not in exclude and all(r in by_judge[j] for j in judges))
    return CalibrationSet(
        refs=refs,
        sme=[sme[r] for r in refs],
        verdicts={j: [by_judge[j][r] for r in refs] for j in judges},
    )


def judge_calibration(cset: CalibrationSet, judge: str, n_boot: int = 1000) -> Calibration | None:
    """``judge`` against the SMEs on ``cset``; None when the set is empty."""
    if not cset.refs:
        return None
    verdicts = [v["verdict"] for v in cset.verdicts[judge]]
    return calibrate(cset.labels, verdicts, cset.categories, n_boot=n_boot)


def judge_comparison(cset: CalibrationSet, a: str, b: str, n_boot: int = 1000) -> JudgeComparison | None:
    """Two judges on the same SME set (paired bootstrap); None when the set is empty."""
    if not cset.refs:
        return None
    va, vb = ([v["verdict"] for v in cset.verdicts[j]] for j in (a, b))
    return compare_judges(cset.labels, va, vb, cset.categories, n_boot=n_boot)


# ----------------------------------------------------------------------- display
def format_ci(ci: Interval) -> str:
    """``[0.61, 0.93]``, or ``—`` when the interval is undefined."""
    return "—" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def metrics_frame(cal: Calibration) -> pd.DataFrame:
    """One row per metric: point estimate and bootstrap interval."""
    rows = [{"metric": m, "value": getattr(cal, m), "95% CI": format_ci(cal.ci.get(m))} for m in METRICS]
    return pd.DataFrame(rows, columns=["metric", "value", "95% CI"])


def category_frame(cal: Calibration) -> pd.DataFrame:
    """Per SME error category: size, agreement, judge accept rate, misses, false rejects."""
    rows = [{"category": name, **vars(s)} for name, s in cal.per_category.items()]
    columns = ["category", "n", "agreement", "judge_accept_rate", "missed", "false_rejects", "unparsable"]
    return pd.DataFrame(rows, columns=columns)


def comparison_frame(cmp: JudgeComparison, a: str, b: str) -> pd.DataFrame:
    """Per metric: judge ``a``, judge ``b``, ``b − a`` and the paired bootstrap interval of ``b − a``."""
    rows = [
        {
            "metric": m,
            a: getattr(cmp.a, m),
            b: getattr(cmp.b, m),
            f"{b} − {a}": cmp.difference[m],
            "95% CI of the difference": format_ci(cmp.difference_ci.get(m)),
        }
        for m in METRICS
    ]
    return pd.DataFrame(rows)


def confusion_figure(cal: Calibration, title: str = "") -> go.Figure:
    """SME label (rows) by judge verdict (columns), counts in the cells: agreement in blue,
    disagreement in red (SME reject × judge accept is the costly one)."""
    shown = [
        c for c in JUDGE_LABELS if c in ("accept", "reject") or any(cal.matrix[s][c] for s in cal.matrix)
    ]
    sme_rows = ["accept", "reject"]
    counts = [[cal.matrix[s][c] for c in shown] for s in sme_rows]
    agree = [[(s == "accept") == (c == "accept") for c in shown] for s in sme_rows]
    fig = go.Figure()
    # Two traces over the same cells, each blank (None) where the other draws: two colour scales.
    for keep, colour in ((True, "#2f6fde"), (False, "#c0392b")):
        z = [
            [n if a == keep else None for n, a in zip(row, arow, strict=True)]
            for row, arow in zip(counts, agree, strict=True)
        ]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[f"judge: {c}" for c in shown],
                y=[f"SME: {s}" for s in sme_rows],
                text=[["" if n is None else str(n) for n in row] for row in z],
                texttemplate="%{text}",
                textfont={"size": 18},
                colorscale=[[0, "#f3f5f9"], [1, colour]],
                zmin=0,
                zmax=max(1, *(n for row in counts for n in row)),
                showscale=False,
                xgap=2,
                ygap=2,
                hovertemplate="%{y} · %{x}: %{z}<extra></extra>",
            )
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=title or None,
        height=260,
        margin={"t": 40 if title else 10, "b": 10, "l": 10, "r": 10},
        plot_bgcolor="#ffffff",
    )
    return fig


def disagreements(cset: CalibrationSet, judge: str) -> list[dict[str, Any]]:
    """Items where the SMEs and ``judge`` differ on accept vs not accept, with both reasons."""
    out = []
    for ref, sme, v in zip(cset.refs, cset.sme, cset.verdicts[judge], strict=True):
        if (sme["label"] == "accept") == (v["verdict"] == "accept"):
            continue
        where = parse_ref(ref) or {}
        out.append(
            {
                "item_ref": ref,
                "run_id": where.get("run_id"),
                "idx": where.get("idx"),
                "sme": sme["label"],
                "category": sme["category"] or "",
                "sme_note": sme["note"],
                "judge": v["verdict"],
                "judge_reason": v["reason"],
            }
        )
    return out
