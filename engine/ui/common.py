"""What the dashboard pages show, computed without Streamlit.

Pages in ``views/`` only draw: every table, figure and spec they need is built here, so it
can be unit-tested without a browser (``tests/test_ui_helpers.py``). Nothing here writes to
the store except :func:`launch` and :func:`start_scheduler`, which wrap the engine's own
entry points.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from engine import ablation, jobs
from engine.access import Actor, Right, least_role
from engine.specs import ExperimentSpec
from engine.store import ACTIVE, TERMINAL, Store
from engine.ui.launch_form import (  # noqa: F401  (the Launch form's public helpers)
    FORM_FIELDS,
    LIST_FIELDS,
    OPTIONAL_FIELDS,
    form_defaults,
    parse_int_list,
    spec_from_form,
)
from engine.words import plural

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

# The Launch form (fields, defaults, parsing) lives in engine.ui.launch_form; re-exported here.


# ----------------------------------------------------------------------- scheduler
def autostart_enabled() -> bool:
    """False when ``SENSEI_NO_AUTOSTART`` is set (tests): the app then never spawns a scheduler."""
    return os.environ.get("SENSEI_NO_AUTOSTART", "").strip().lower() in ("", "0", "false", "no")


def start_scheduler(store: Store) -> bool:
    """Make sure the workspace's scheduler runs (unless autostart is off). True if started."""
    if not autostart_enabled():
        return False
    return jobs.ensure_scheduler(store)


def launch(store: Store, spec: ExperimentSpec, *, actor: Actor) -> str:
    """Queue an experiment as ``actor`` and wake the scheduler; returns the experiment id."""
    exp_id = ablation.launch_experiment(store, spec, actor=actor)
    start_scheduler(store)
    return exp_id


def role_note(actor: Actor, right: Right, what: str) -> str:
    """What a page says instead of a control ``actor``'s role lacks (the engine refuses it too).

    ``what`` follows "cannot", e.g. ``"launch experiments"``.
    """
    return (
        f"Your role ({actor.role}) cannot {what}: that takes the {least_role(right)} role. "
        "An admin can change roles."
    )


def demo_preset() -> str:
    """The demo preset the Run-the-demo button uses: ``$SENSEI_DEMO_PRESET`` or ``standard``."""
    return os.environ.get("SENSEI_DEMO_PRESET", "standard")


# ---------------------------------------------------------------------- formatting
def format_duration(seconds: float | None) -> str:
    """``95`` -> ``"1m 35s"``; None -> ``""``."""
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def format_ago(ts: float | None, now: float | None = None) -> str:
    """How long ago a timestamp was, e.g. ``"3 min ago"``."""
    if not ts:
        return ""
    d = max(0.0, (now or time.time()) - ts)
    if d < 60:
        return "just now"
    if d < 3600:
        return f"{int(d // 60)} min ago"
    if d < 86400:
        return f"{int(d // 3600)} h ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def experiment_label(exp: Mapping[str, Any]) -> str:
    """Selector label of an experiment: ``name · id · when``."""
    return f"{exp['name']} · {exp['id']} · {format_ago(exp['created_at'])}"


# ------------------------------------------------------------------- workspace/jobs
def status_counts(job_rows: list[dict[str, Any]]) -> dict[str, int]:
    """Jobs per status, every status present (zero if none)."""
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for j in job_rows:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    return counts


def status_line(job_rows: list[dict[str, Any]]) -> str:
    """One readable line such as ``1 running · 4 queued · 2 succeeded`` (zeros left out)."""
    counts = status_counts(job_rows)
    return " · ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs"


def experiments_frame(store: Store, limit: int | None = None) -> pd.DataFrame:
    """Recent experiments with status and how many jobs have finished."""
    rows = []
    for exp in store.list_experiments()[:limit]:
        job_rows = store.list_jobs(experiment_id=exp["id"])
        done = sum(j["status"] in TERMINAL for j in job_rows)
        rows.append(
            {
                "experiment": exp["name"],
                "id": exp["id"],
                "created": format_ago(exp["created_at"]),
                "status": ablation.experiment_status(store, exp["id"]),
                "done": done / len(job_rows) if job_rows else 0.0,
                "jobs": status_line(job_rows),
            }
        )
    return pd.DataFrame(rows, columns=["experiment", "id", "created", "status", "done", "jobs"])


def job_label(job: Mapping[str, Any], with_status: bool = True) -> str:
    """``train n=200 seed 0 · running · job-…`` (teacher jobs have no size)."""
    spec = job.get("spec") or {}
    what = job["kind"]
    if "train_size" in spec:
        what += f" n={spec['train_size']} seed {spec.get('seed', 0)}"
    return f"{what} · {job['status']} · {job['id']}" if with_status else f"{what} · {job['id']}"


def focus_index(exp_ids: list[str], focus: str | None) -> int:
    """Index of the experiment to preselect: the focused one (just launched or last viewed),
    else 0 (the newest)."""
    return exp_ids.index(focus) if focus in exp_ids else 0


def experiment_from_url(value: str | None, exp_ids: list[str]) -> str | None:
    """The experiment a URL's ``?experiment=`` names, if it is one of ``exp_ids``; else None
    (a stale bookmark or a typo is ignored, never an error)."""
    value = (value or "").strip()
    return value if value in exp_ids else None


def jobs_frame(job_rows: list[dict[str, Any]], now: float | None = None) -> pd.DataFrame:
    """The Runs page's job table, oldest first (the order the scheduler runs them)."""
    rows = []
    for j in sorted(job_rows, key=lambda j: (j["created_at"], j["id"])):
        spec = j.get("spec") or {}
        rows.append(
            {
                "kind": j["kind"],
                "train_size": _text(spec.get("train_size")),
                "seed": _text(spec.get("seed")),
                "status": j["status"],
                "progress": float(j["progress"] or 0.0),
                "eta": format_duration(jobs.eta_seconds(j, now)),
                "message": j["error"] or j["message"] or "",
                "job": j["id"],
            }
        )
    return pd.DataFrame(
        rows, columns=["kind", "train_size", "seed", "status", "progress", "eta", "message", "job"]
    )


def _text(value: Any) -> str:
    # Text, not numbers, so a teacher job's missing size shows blank rather than "None".
    return "" if value is None else str(value)


def active_jobs(job_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Queued or running jobs, running first, then in queue order."""
    act = [j for j in job_rows if j["status"] in ACTIVE]
    return sorted(act, key=lambda j: (j["status"] != "running", j["created_at"], j["id"]))


def default_log_job(job_rows: list[dict[str, Any]]) -> int:
    """Index (in queue order) of the job whose log to show first: the running one, else the
    last one that started, else the first."""
    ordered = sorted(job_rows, key=lambda j: (j["created_at"], j["id"]))
    for i, j in enumerate(ordered):
        if j["status"] == "running":
            return i
    started = [i for i, j in enumerate(ordered) if j["started_at"]]
    return started[-1] if started else 0


def events_frame(store: Store, job_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Events (worker died, cancelled, failed, ...) of the given jobs, newest first."""
    rows = []
    for j in job_rows:
        for e in store.list_events(job_id=j["id"]):
            rows.append(
                {
                    "when": time.strftime("%H:%M:%S", time.localtime(e["ts"])),
                    "ts": e["ts"],
                    "level": e["level"],
                    "event": e["kind"],
                    "message": e["message"],
                    "job": j["id"],
                }
            )
    rows.sort(key=lambda r: r["ts"], reverse=True)
    return pd.DataFrame(rows, columns=["when", "ts", "level", "event", "message", "job"]).drop(columns="ts")


PRIMARY = "#2f6fde"  # .streamlit/config.toml primaryColor
SIZE_COLORS = ("#2f6fde", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400")
SEED_DASHES = ("solid", "dot", "dash", "dashdot", "longdash")


def loss_figure(store: Store, experiment_id: str) -> go.Figure | None:
    """Training loss vs step, one line per run (colour = train size, dash = seed); None until
    some run logged a loss."""
    runs = {r["id"]: r for r in store.list_runs(experiment_id)}
    series = pd.DataFrame(store.metric_series(list(runs), "loss"))
    if series.empty:
        return None
    sizes = sorted({r["train_size"] for r in runs.values()})
    seeds = sorted({r["seed"] for r in runs.values()})
    fig = go.Figure()
    for run_id in sorted(set(series["run_id"]), key=lambda i: (runs[i]["train_size"], runs[i]["seed"])):
        run, pts = runs[run_id], series[series["run_id"] == run_id]
        color = SIZE_COLORS[sizes.index(run["train_size"]) % len(SIZE_COLORS)]
        dash = SEED_DASHES[seeds.index(run["seed"]) % len(SEED_DASHES)]
        fig.add_trace(
            go.Scatter(
                x=pts["step"],
                y=pts["value"],
                mode="lines",
                name=f"n={run['train_size']} seed {run['seed']}",
                line={"color": color, "dash": dash},
            )
        )
    fig.update_layout(
        xaxis_title="step",
        yaxis_title="training loss",
        legend_title="run",
        margin={"t": 30, "b": 10},
        height=340,
    )
    return fig


def outputs_page(store: Store, run_id: str, page: int, page_size: int = 20) -> tuple[pd.DataFrame, int]:
    """One page (1-based) of a run's per-example test outputs, and the number of pages."""
    rows = store.list_outputs(run_id)
    pages = max(1, -(-len(rows) // page_size))
    page = min(max(1, page), pages)
    chunk = rows[(page - 1) * page_size : page * page_size]
    table = [
        {
            "idx": r["idx"],
            "output": r["output"],
            "reference": r["reference"],
            **{k: v for k, v in (r.get("scores") or {}).items()},
            "prompt": r["prompt"],
        }
        for r in chunk
    ]
    return pd.DataFrame(table), pages


# ---------------------------------------------------------------------- launch form
def plan_sentence(spec: ExperimentSpec) -> str:
    """What launching ``spec`` queues, e.g. ``1 teacher job + 3 sizes × 2 seeds = 6 runs``."""
    sizes, seeds = spec.ablation.train_sizes, spec.ablation.seeds
    n = len(sizes) * len(seeds)
    path = spec.vary_path()
    if path is None:
        grid = f"{plural(len(sizes), 'size')} × {plural(len(seeds), 'seed')}"
        return (
            f"1 teacher job ({spec.teacher.kind}) + {grid}"
            f" = {plural(n, 'training run')} of `{spec.student.model}`, sizes {sizes}, "
            f"scored by {spec.curve_metric()} on {spec.data.test_size} test examples"
        )
    values = spec.ablation.vary[path]
    teachers = len({r.teacher_key() for _, r in spec.variant_specs()})
    return (
        f"{plural(teachers, 'teacher job')} ({spec.teacher.kind}) + {plural(len(sizes), 'size')} × "
        f"{plural(len(seeds), 'seed')} × {len(values)} values of `{path}` ({', '.join(map(str, values))}) "
        f"= {plural(n * len(values), 'training run')} of `{spec.student.model}`, sizes {sizes}, one curve "
        f"per value, all scored by {spec.curve_metric()} on the same {spec.data.test_size} test examples"
    )


def versus_teacher_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """:func:`engine.judges.pairwise.versus_teacher` rows as a table."""
    return pd.DataFrame(
        [
            {
                "train size": r["train_size"],
                "seed": r["seed"],
                "student score": r["student_score"],
                "95% CI": "—" if r["ci"] is None else f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]",
                "pairs": r["pairs"],
                "judge": r["judge"],
                "run": r["run_id"],
            }
            for r in rows
        ]
    )


def versus_teacher_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """The student's pairwise score against the teacher by train size (log x), with each run's
    95% interval, and the line where the student is as good as its teacher."""
    scored = [r for r in rows if r["student_score"] is not None]
    fig = go.Figure(
        go.Scatter(
            x=[r["train_size"] for r in scored],
            y=[r["student_score"] for r in scored],
            mode="markers",
            name="student vs teacher (95% CI)",
            text=[f"seed {r['seed']} · {r['judge']} · {r['pairs']} pairs" for r in scored],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r["ci"][1] - r["student_score"] if r["ci"] else 0 for r in scored],
                "arrayminus": [r["student_score"] - r["ci"][0] if r["ci"] else 0 for r in scored],
            },
            marker={"size": 10, "color": PRIMARY},
        )
    )
    fig.add_hline(
        y=0.5,
        line_dash="dash",
        line_color="#c0392b",
        annotation_text="as good as the teacher",
        annotation_position="top left",
    )
    sizes = sorted({r["train_size"] for r in scored})
    fig.update_xaxes(type="log", tickvals=sizes, ticktext=[str(s) for s in sizes], title="training examples")
    fig.update_yaxes(range=[0, 1], title="student score")
    fig.update_layout(margin={"t": 30, "b": 10}, height=320, showlegend=False)
    return fig
