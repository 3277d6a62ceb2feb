"""An experiment's curve as files a team can keep: HTML report, CSV, PNG, and W&B.

The HTML report is self-contained (plotly's JavaScript inlined, no network needed to open it):
the interactive chart, the points table, the fit and what it says, the spec diff against the
compared experiments, and the discussion. PNG export goes through kaleido, which drives a
headless Chromium (Debian's, found on the PATH or through ``BROWSER_PATH``).
"""

from __future__ import annotations

import csv
import html
import io
import os
import shutil
from pathlib import Path

from engine.ablation.compare import Overlay, overlay
from engine.store import Store


def _overlay(store: Store, exp_id: str, compare: list[str] | None, metric: str | None) -> Overlay:
    return overlay(store, exp_id, list(compare or []), metric)


def points_csv(store: Store, exp_id: str, compare: list[str] | None = None, metric: str | None = None) -> str:
    """Every point of every overlaid curve: experiment, size, mean, interval, seeds."""
    ov = _overlay(store, exp_id, compare, metric)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["experiment", "metric", "train_size", "mean", "ci_low", "ci_high", "n_seeds"])
    for eid, curve in ov.curves.items():
        for p in curve.points:
            writer.writerow(
                [eid, curve.metric, p.size, f"{p.mean:.6f}", f"{p.ci_low:.6f}", f"{p.ci_high:.6f}", p.n_seeds]
            )
    return out.getvalue()


def html_report(
    store: Store, exp_id: str, compare: list[str] | None = None, metric: str | None = None
) -> str:
    """A self-contained HTML page: chart, points, fit, spec diff, discussion."""
    from engine.ui import curves

    ov = _overlay(store, exp_id, compare, metric)
    exp = store.get_experiment(exp_id) or {}
    curve = ov.curves.get(exp_id)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Sensei report · {esc(exp.get('name', exp_id))}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1f2430}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccd;padding:4px 8px;text-align:right}"
        "th{background:#f3f5f9}.note{white-space:pre-wrap}</style></head><body>",
        f"<h1>{esc(exp.get('name', exp_id))} <small>({esc(exp_id)})</small></h1>",
    ]
    if curve is None or not curve.points:
        parts.append("<p>No finished run yet: nothing to draw.</p>")
    else:
        fig = curves.overlay_figure(ov)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=True, div_id="curve"))
        parts.append(f"<p>{esc(curve.summary_line())}</p>")
        parts.extend(f"<p>{esc(line)}</p>" for line in curves.fit_sentences(curve))
        for eid, c in ov.curves.items():
            parts.append(f"<h2>Points · {esc(ov.labels[eid])}</h2>")
            frame = curves.points_frame(c)
            parts.append(frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep=""))
        if curve.baselines:
            rows = "".join(f"<tr><th>{esc(k)}</th><td>{v:.4f}</td></tr>" for k, v in curve.baselines.items())
            parts.append(f"<h2>Baselines</h2><table>{rows}</table>")
    for eid, why in ov.refused.items():
        parts.append(f"<p>Not overlaid: {esc(eid)} — {esc(why)}.</p>")
    if ov.diffs:
        parts.append("<h2>Spec diff</h2>")
        parts.append(curves.diff_frame(ov).to_html(index=False, escape=True))
        parts.extend(f"<p><b>Warning:</b> {esc(w)}</p>" for w in ov.warnings())
    notes = store.list_notes(exp_id)
    parts.append("<h2>Discussion</h2>")
    if notes:
        frame = curves.notes_frame(notes)
        parts.append(frame.to_html(index=False, escape=True, classes="notes"))
    else:
        parts.append("<p>No comments.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def chart_png(
    store: Store, exp_id: str, compare: list[str] | None = None, metric: str | None = None
) -> bytes:
    """The curve chart as PNG (kaleido + a headless Chromium).

    Raises:
        RuntimeError: kaleido or a Chromium is missing, with what to install.
    """
    from engine.ui import curves

    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise RuntimeError("PNG export needs the kaleido package (pip install kaleido)") from None
    browser = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("google-chrome")
    if not browser:
        raise RuntimeError("PNG export needs a Chromium: apt-get install chromium (or set BROWSER_PATH)")
    os.environ.setdefault("BROWSER_PATH", browser)
    fig = curves.overlay_figure(_overlay(store, exp_id, compare, metric))
    try:
        return bytes(fig.to_image(format="png", width=1100, height=520))
    except Exception as err:  # kaleido reports a missing or broken browser in many ways
        raise RuntimeError(f"PNG export failed: {err}") from None


def write_report(
    store: Store, exp_id: str, out_dir: Path, metric: str | None = None, compare: list[str] | None = None
) -> list[Path]:
    """Write ``report.html``, ``points.csv`` and ``curve.png`` (when a browser is there) to ``out_dir``.

    Raises:
        KeyError: no such experiment.
    """
    if store.get_experiment(exp_id) is None:
        raise KeyError(f"no experiment {exp_id}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / "report.html"
    path.write_text(html_report(store, exp_id, compare, metric), encoding="utf-8")
    written.append(path)
    path = out_dir / "points.csv"
    path.write_text(points_csv(store, exp_id, compare, metric), encoding="utf-8")
    written.append(path)
    try:
        png = chart_png(store, exp_id, compare, metric)
    except RuntimeError as err:
        print(f"warning: no PNG: {err}")
    else:
        path = out_dir / "curve.png"
        path.write_bytes(png)
        written.append(path)
    return written


def log_curve(store: Store, exp_id: str) -> None:
    """Log the experiment's curve to W&B (a table and a line plot) in the experiment's group."""
    from engine.ablation.curve import experiment_curve
    from engine.training import tracking

    curve = experiment_curve(store, exp_id)
    if curve is None or not curve.points or not tracking.report_to():
        return
    import wandb

    run = tracking.start_run(store.home, name=f"{exp_id}-curve", group=exp_id, tags=["curve"], config={})
    if run is None:
        return
    try:
        table = wandb.Table(
            columns=["train_size", curve.metric, "ci_low", "ci_high", "n_seeds"],
            data=[[p.size, p.mean, p.ci_low, p.ci_high, p.n_seeds] for p in curve.points],
        )
        run.log(
            {
                "curve/points": table,
                "curve/plot": wandb.plot.line(
                    table, "train_size", curve.metric, title=f"{curve.metric} by train size"
                ),
            }
        )
    finally:
        tracking.finish_run(run, {}, failed=False)
