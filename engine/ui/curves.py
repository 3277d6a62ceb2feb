"""What the Ablation page draws: curves with intervals and bands, baselines, tables, sentences.

Everything here is computed without Streamlit from :mod:`engine.ablation` objects; the page
only lays it out. The page's state (experiment, compared experiments, metric, axis) lives in
the URL so that a copied link reproduces the view: :func:`parse_query` and :func:`to_query`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from engine.ablation.compare import Overlay
from engine.ablation.curve import Curve

COLORS = ("#2f6fde", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400")
BASELINE_STYLE = {
    "teacher": ("teacher (reference)", "#c0392b", "dash", "top left"),
    "zero_shot": ("untrained student", "#7f8c8d", "dot", "bottom right"),
    "majority": ("majority answer", "#95a5a6", "dashdot", "top right"),
}
AXES = ("absolute", "percent_of_teacher")


def parse_query(params: Mapping[str, Any], experiment_ids: list[str], metrics: list[str]) -> dict[str, Any]:
    """The page state from URL query parameters, with unknown values dropped.

    ``?experiment=ID&compare=ID,ID&metric=NAME&axis=absolute|percent_of_teacher``.
    """

    def one(key: str) -> str | None:
        value = params.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        return str(value) if value else None

    exp = one("experiment")
    compare = [c for c in (one("compare") or "").split(",") if c in experiment_ids and c != exp]
    metric = one("metric")
    axis = one("axis")
    return {
        "experiment": exp if exp in experiment_ids else None,
        "compare": list(dict.fromkeys(compare)),
        "metric": metric if metric in metrics else None,
        "axis": axis if axis in AXES else "absolute",
    }


def to_query(experiment: str, compare: list[str], metric: str | None, axis: str) -> dict[str, str]:
    """URL query parameters for a page state (empty values left out)."""
    out = {"experiment": experiment}
    if compare:
        out["compare"] = ",".join(compare)
    if metric:
        out["metric"] = metric
    if axis != "absolute":
        out["axis"] = axis
    return out


def _scale(curve: Curve, axis: str) -> float | None:
    """Divide by this to draw on ``axis`` (None: this curve cannot be drawn there)."""
    if axis == "percent_of_teacher":
        return curve.teacher / 100 if curve.teacher else None
    return 1.0


def overlay_figure(overlay: Overlay, axis: str = "absolute", extrapolate: float = 4.0) -> go.Figure:
    """Every curve of an overlay: points with 95% intervals, the fit and its band, baselines."""
    fig = go.Figure()
    ticks: set[int] = set()
    many = len(overlay.curves) > 1
    for i, (exp_id, curve) in enumerate(overlay.curves.items()):
        color = COLORS[i % len(COLORS)]
        label = overlay.labels[exp_id] if many else ""
        _add_curve(fig, curve, label, color, axis, extrapolate, show_baselines=i == 0, ticks=ticks)
    metric = next(iter(overlay.curves.values())).metric if overlay.curves else ""
    title = f"{metric} (% of the teacher)" if axis == "percent_of_teacher" else metric
    tickvals = sorted(ticks)
    fig.update_xaxes(
        type="log",
        tickvals=tickvals,
        ticktext=[str(t) for t in tickvals],
        title="training examples (log scale)",
    )
    fig.update_layout(
        yaxis_title=title,
        margin={"t": 30, "b": 10},
        height=460,
        legend={"orientation": "h", "y": -0.22},
    )
    return fig


def curve_figure(curve: Curve, axis: str = "absolute", extrapolate: float = 4.0) -> go.Figure:
    """One experiment's curve (see :func:`overlay_figure`)."""
    return overlay_figure(Overlay(base="x", curves={"x": curve}, labels={"x": ""}), axis, extrapolate)


def _add_curve(
    fig: go.Figure,
    curve: Curve,
    label: str,
    color: str,
    axis: str,
    extrapolate: float,
    show_baselines: bool,
    ticks: set[int],
) -> None:
    scale = _scale(curve, axis)
    if scale is None or not curve.points:
        return
    ticks.update(curve.sizes)
    seeds = [r for r in curve.runs if r["train_size"] > 0]
    if any(p.n_seeds > 1 for p in curve.points):
        fig.add_trace(
            go.Scatter(
                x=[r["train_size"] for r in seeds],
                y=[r[curve.metric] / scale for r in seeds],
                mode="markers",
                name=f"{label} · single seeds" if label else "single seeds",
                text=[f"seed {r['seed']} · {r['run_id']}" for r in seeds],
                marker={"size": 6, "opacity": 0.4, "color": color},
                showlegend=False,
            )
        )
    lo = [(p.mean - p.ci_low) / scale if math.isfinite(p.ci_low) else 0.0 for p in curve.points]
    hi = [(p.ci_high - p.mean) / scale if math.isfinite(p.ci_high) else 0.0 for p in curve.points]
    fig.add_trace(
        go.Scatter(
            x=curve.sizes,
            y=[m / scale for m in curve.mean],
            mode="lines+markers",
            name=f"{label or 'mean over seeds'} (95% interval)",
            error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo, "visible": True},
            marker={"size": 10, "color": color},
            line={"color": color},
        )
    )
    if curve.fit is not None:
        far = max(curve.sizes) * extrapolate
        xs = np.geomspace(min(curve.sizes), far, 60)
        band_lo, band_hi = curve.fit.band(xs)
        top = _upper_bound(curve)
        if top is not None:  # a score bounded by 1 is drawn within it, whatever a family says
            band_lo, band_hi = np.minimum(band_lo, top), np.minimum(band_hi, top)
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([xs, xs[::-1]]),
                y=np.concatenate([band_hi, band_lo[::-1]]) / scale,
                fill="toself",
                fillcolor=_alpha(color, 0.15),
                line={"width": 0},
                hoverinfo="skip",
                name=f"{label} fit band".strip(),
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=(np.minimum(curve.fit.predict(xs), top) if top is not None else curve.fit.predict(xs))
                / scale,
                mode="lines",
                name=f"{label} fit ({curve.fit.family.replace('_', ' ')})".strip(),
                line={"dash": "dot", "color": color, "width": 2},
            )
        )
        ticks.add(int(far))
    if show_baselines:
        for key, value in curve.baselines.items():
            name, bcolor, dash, where = BASELINE_STYLE.get(key, (key, "#7f8c8d", "dot", "top left"))
            fig.add_hline(
                y=value / scale,
                line_dash=dash,
                line_color=bcolor,
                annotation_text=f"{name} {value / scale:.1f}%"
                if axis == "percent_of_teacher"
                else f"{name} {value:.3f}",
                annotation_position=where,
            )


def _upper_bound(curve: Curve) -> float | None:
    """1.0 for a metric whose values all lie within [0, 1] (accuracy-like), else None."""
    values = [p.mean for p in curve.points] + list(curve.baselines.values())
    return 1.0 if values and all(0.0 <= v <= 1.0 for v in values) else None


def _alpha(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def points_frame(curve: Curve) -> pd.DataFrame:
    """Per-size table: mean, 95% interval, seeds, measured gain per extra 100 examples."""
    return pd.DataFrame(
        curve.table(), columns=["train_size", curve.metric, "ci_low", "ci_high", "seeds", "gain_per_100"]
    )


def runs_frame(curve: Curve) -> pd.DataFrame:
    """Every finished run: size, seed, score, steps and epochs it trained, and why it stopped."""
    rows = [
        {
            "train size": r["train_size"],
            "seed": r["seed"],
            curve.metric: r[curve.metric],
            "steps": _int(r.get("steps")),
            "epochs": r.get("epochs"),
            "stopped": (r.get("stop") or "").replace("_", " "),
            "run": r["run_id"],
        }
        for r in sorted(curve.runs, key=lambda r: (r["train_size"], r["seed"]))
    ]
    columns = ["train size", "seed", curve.metric, "steps", "epochs", "stopped", "run"]
    return pd.DataFrame(rows, columns=columns)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def fit_sentences(curve: Curve, target: str | float | None = None) -> list[str]:
    """What the fit says, or why there is none: family and validation, marginal value, target."""
    cf = curve.curve_fit
    if cf is None or cf.fit is None:
        return [f"No fit: {cf.reason}." if cf and cf.reason else "No fit yet."]
    f = cf.fit
    inside = "inside" if cf.inside_band else "outside"
    lines = [
        f"Fit: {f.family.replace('_', ' ')} ({_params(f.params)}), chosen because fitted on the smaller "
        f"sizes it predicted n={cf.heldout_size:.0f} within {abs(cf.heldout_error or 0):.3f} "
        f"({inside} its band)."
    ]
    if marginal := curve.marginal():
        ten, k = marginal["per_10_percent"], marginal["per_1000_examples"]
        lines.append(
            f"At n={marginal['at_size']}: +10% more data buys {ten['gain']:+.4f} "
            f"[{ten['ci_low']:+.4f}, {ten['ci_high']:+.4f}]; +1,000 examples buy {k['gain']:+.4f} "
            f"[{k['ci_low']:+.4f}, {k['ci_high']:+.4f}]."
        )
    goal = curve.to_target(target)
    if goal:
        if goal["size"] is None:
            lines.append(
                f"Target {goal['target']:.3f} ({goal['target_spec']}): not within reach of this fit."
            )
        else:
            hi = "∞" if goal["ci_high"] is None else f"{goal['ci_high']:,.0f}"
            lo = "?" if goal["ci_low"] is None else f"{goal['ci_low']:,.0f}"
            extra = ""
            if "teacher_usd" in goal:
                extra += f", about ${goal['teacher_usd']:,.2f} of teacher answers"
            if "train_seconds" in goal:
                extra += f" and {goal['train_seconds'] / 60:,.1f} min of training"
            lines.append(
                f"Target {goal['target']:.3f} ({goal['target_spec']}): n≈{goal['size']:,.0f} "
                f"[{lo}, {hi}]{extra}."
            )
    return lines


def _params(params: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in params.items())


def diff_frame(overlay: Overlay) -> pd.DataFrame:
    """The spec diff of every compared experiment against the base, one row per parameter."""
    rows = [
        {
            "experiment": overlay.labels[exp_id],
            "parameter": key,
            overlay.labels[overlay.base]: _show(a),
            "this one": _show(b),
        }
        for exp_id, diff in overlay.diffs.items()
        for key, a, b in diff
    ]
    return pd.DataFrame(rows, columns=["experiment", "parameter", overlay.labels[overlay.base], "this one"])


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


def note_heading(note: Mapping[str, Any]) -> str:
    """``Decision · alice · 2026-12-02 14:05`` for one note of the discussion."""
    import time

    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(note["ts"]))
    return f"{note['kind'].capitalize()} · {note['author']} · {when}"


def notes_frame(notes: list[dict[str, Any]]) -> pd.DataFrame:
    """An experiment's discussion, oldest first: when, who, kind, text."""
    import time

    rows = [
        {
            "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(n["ts"])),
            "who": n["author"],
            "kind": n["kind"],
            "text": n["text"],
        }
        for n in notes
    ]
    return pd.DataFrame(rows, columns=["when", "who", "kind", "text"])


def parse_ints(text: str, what: str) -> list[int]:
    """``"1600, 3200"`` as ``[1600, 3200]``; a clear error naming ``what`` otherwise."""
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        if not part.isdigit() or len(part) > 9:
            raise ValueError(f"{what}: {part[:40]!r} is not a whole number (up to 9 digits)")
        out.append(int(part))
    return out
