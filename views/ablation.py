"""Ablation: the marginal-utility curve of an experiment — what more data buys."""

from __future__ import annotations

from functools import partial

import streamlit as st

from engine import ablation, jobs
from engine.ablation.compare import Overlay, overlay, variant_overlay, varies
from engine.access import Right
from engine.judges import pairwise as pairwise_job
from engine.review.gold import GoldDisagreements, gold_disagreements
from engine.specs import ExperimentSpec
from engine.store import ACTIVE, Store
from engine.ui import common as ui
from engine.ui import curves
from engine.ui import review as review_view

st.title("Ablation")
st.write(
    "See how the student's score grows with the number of training examples, what the next "
    "examples are worth and cost, and compare recipes side by side. The link in your browser "
    "reproduces this view."
)


@st.cache_data(ttl=3, show_spinner=False)
def _overlay(home: str, exp_id: str, compare: tuple[str, ...], metric: str | None) -> Overlay:
    store = Store(home)
    if not compare and varies(store, exp_id):  # one curve per value of ablation.vary
        return variant_overlay(store, exp_id, metric)
    return overlay(store, exp_id, list(compare), metric)


@st.cache_data(ttl=30, show_spinner=False)
def _next_size(home: str, exp_id: str, metric: str | None, target: str | None) -> dict:
    curve = ablation.experiment_curve(Store(home), exp_id, metric=metric)
    return curve.next_size(target) if curve else {"size": None, "reason": "no experiment"}


@st.fragment(run_every=5)
def curve_view(store: Store, exp_id: str, compare: list[str], metric: str | None, axis: str) -> None:
    """The curves redraw themselves while runs finish."""
    ov = _overlay(str(store.home), exp_id, tuple(compare), metric)
    for other, why in ov.refused.items():
        st.warning(f"Not overlaid: {other} — {why}.")
    for line in ov.warnings():
        st.warning(line)
    curve = ov.curves.get(exp_id) or ov.curves.get(ov.base)
    if curve is None or not curve.points:
        if any(j["status"] in ACTIVE for j in store.list_jobs(experiment_id=exp_id)):
            st.info(
                "Runs are still in progress — the curve appears as soon as the first one "
                "finishes. Follow them on Runs."
            )
            st.page_link("views/runs.py", label="Runs", icon=":material/monitoring:")
        else:
            st.warning(
                "No run of this experiment finished successfully — see Runs for the "
                "errors, or launch a new experiment."
            )
            st.page_link("views/launch.py", label="Launch", icon=":material/rocket_launch:")
        return
    if axis == "percent_of_teacher" and curve.teacher is None:
        st.caption("The teacher's score is not known yet: drawn in absolute values.")
        axis = "absolute"
    st.plotly_chart(curves.overlay_figure(ov, axis), key="curve_chart")
    if exp_id in ov.curves:
        st.caption(curve.summary_line())
    else:  # the values of ablation.vary: one line each; the tables below are the first value's
        for key, one in ov.curves.items():
            st.caption(one.summary_line(ov.labels[key]))
    target = st.session_state.get("abl_target") or None
    try:
        sentences = curves.fit_sentences(curve, target)
    except ValueError as err:
        sentences = [f"Target: {err}"]
    for line in sentences:
        st.caption(line)
    st.dataframe(
        curves.points_frame(curve),
        hide_index=True,
        placeholder="",
        column_config={
            "train_size": st.column_config.NumberColumn("train size"),
            curve.metric: st.column_config.NumberColumn(format="%.4f"),
            "ci_low": st.column_config.NumberColumn("95% low", format="%.4f"),
            "ci_high": st.column_config.NumberColumn("95% high", format="%.4f"),
            "gain_per_100": st.column_config.NumberColumn("gain per +100 examples", format="%+.4f"),
        },
    )
    with st.expander("Runs: steps, epochs and score of each"):
        st.dataframe(
            curves.runs_frame(curve),
            hide_index=True,
            placeholder="",
            column_config={
                curve.metric: st.column_config.NumberColumn(format="%.4f"),
                "epochs": st.column_config.NumberColumn(format="%.1f"),
            },
        )
    if ov.diffs:
        what = "experiments" if exp_id in ov.curves else "curves"
        st.subheader(f"What differs between the compared {what}")
        st.dataframe(curves.diff_frame(ov), hide_index=True)


def grow_view(store: Store, exp_id: str, metric: str | None) -> None:
    """Suggest the next size; add sizes or seeds to this experiment (teacher answers reused)."""
    with st.expander("Grow this experiment", icon=":material/add_chart:"):
        target = st.session_state.get("abl_target") or None
        try:
            nxt = _next_size(str(store.home), exp_id, metric, target)
        except ValueError as err:
            nxt = {"size": None, "reason": str(err)}
        size = nxt.get("size")
        st.caption(f"Suggested next size: **{size if size is not None else '—'}** — {nxt['reason']}.")
        actor = st.session_state["actor"]
        if not actor.can(Right.LAUNCH):
            st.caption(ui.role_note(actor, Right.LAUNCH, "add cells to an experiment"))
            return
        with st.form("extend"):
            sizes = st.text_input("Sizes to add", value=str(size or ""), help="e.g. 1600, 3200")
            seeds = st.text_input("Seeds to add", value="", help="e.g. 3, 4")
            if st.form_submit_button("Add these cells"):
                try:
                    new_runs = ablation.extend_experiment(
                        store,
                        exp_id,
                        curves.parse_ints(sizes, "sizes"),
                        curves.parse_ints(seeds, "seeds"),
                        actor=actor,
                    )
                except ValueError as err:
                    st.error(f"Not queued: {err}")
                else:
                    if new_runs and ui.autostart_enabled():
                        jobs.ensure_scheduler(store)
                    st.success(
                        f"Queued {len(new_runs)} new run(s); the teacher's answers are reused."
                        if new_runs
                        else "Every one of those cells exists already."
                    )


def discussion_view(store: Store, exp_id: str) -> None:
    """Comments and decisions under the experiment, append-only."""
    st.subheader("Discussion")
    notes = store.list_notes(exp_id)
    for note in notes:
        with st.container(border=True):
            st.caption(curves.note_heading(note))
            st.markdown(note["text"])
    if not notes:
        st.caption('No comments yet. Say what you see, or record a decision ("collect 2k more").')
    actor = st.session_state["actor"]
    if not actor.can(Right.COMMENT):
        st.caption(ui.role_note(actor, Right.COMMENT, "comment"))
        return
    with st.form("note", clear_on_submit=True):
        text = st.text_area("Comment", max_chars=20_000)
        decision = False
        if actor.can(Right.DECIDE):
            decision = st.checkbox("This is a decision", help="e.g. 'ship run X', 'collect 2k more'")
        if st.form_submit_button("Post"):
            try:
                store.add_note(exp_id, text, "decision" if decision else "comment", actor=actor)
            except ValueError as err:
                st.error(f"Not posted: {err}")
            else:
                st.rerun()


def export_view(store: Store, exp_id: str, compare: list[str], metric: str | None) -> None:
    """The report (HTML with the interactive chart), the points as CSV, the chart as PNG.

    Built on request: a report inlines plotly's JavaScript, too heavy to rebuild on every rerun.
    """
    from engine.ablation import report

    with st.expander("Export", icon=":material/download:"):
        key = (exp_id, tuple(compare), metric)
        if st.button("Prepare the report, CSV and PNG", key="prepare_export"):
            files: dict[str, bytes | str] = {
                "html": report.html_report(store, exp_id, compare, metric),
                "csv": report.points_csv(store, exp_id, compare, metric),
            }
            try:
                files["png"] = report.chart_png(store, exp_id, compare, metric)
            except RuntimeError as err:
                st.warning(f"No PNG: {err}")
            st.session_state["export"] = (key, files)
        prepared = st.session_state.get("export")
        if not prepared or prepared[0] != key:
            st.caption(
                "A self-contained HTML report (chart, points, fit, spec diff, discussion), CSV and PNG."
            )
            return
        files = prepared[1]
        cols = st.columns(3)
        cols[0].download_button("HTML report", files["html"], f"{exp_id}-report.html", "text/html")
        cols[1].download_button("Points (CSV)", files["csv"], f"{exp_id}-points.csv", "text/csv")
        if "png" in files:
            cols[2].download_button("Chart (PNG)", files["png"], f"{exp_id}-curve.png", "image/png")


@st.cache_data(ttl=30, show_spinner=False)
def _gold(home: str, exp_id: str, teacher_key: str | None) -> GoldDisagreements:
    return gold_disagreements(Store(home), exp_id, teacher_key)


def _open_gold_row(key: str, refs: list[str]) -> None:
    """Remember the picked example and start a fresh table, so coming back finds no selection."""
    rows = st.session_state[key].selection.rows
    if rows:
        st.session_state["gold_open"] = refs[rows[0]]
        st.session_state["gold_picks"] = st.session_state.get("gold_picks", 0) + 1


def gold_view(store: Store, exp_id: str, spec: ExperimentSpec) -> None:
    """Training examples where the teacher's answer and the gold answer differ, each a link to Review."""
    recipes = {cell.student.effective_recipe for _, cell in spec.variant_specs()}
    with st.expander(
        "Where the teacher and the gold answers disagree",
        expanded="gold" in recipes and len(recipes) > 1,
        icon=":material/rule:",
    ):
        result = _gold(str(store.home), exp_id, None)
        if len(result.teachers) > 1:
            key = st.selectbox(
                "Teacher", list(result.teachers), format_func=result.teachers.__getitem__, key="gold_teacher"
            )
            result = _gold(str(store.home), exp_id, key)
        st.caption(result.summary())
        if not result.rows:
            return
        table = f"gold_rows_{st.session_state.get('gold_picks', 0)}"
        refs = [r.ref for r in result.rows]
        st.dataframe(
            review_view.gold_frame(result),
            hide_index=True,
            height=min(38 + 35 * len(refs), 420),
            on_select=partial(_open_gold_row, table, refs),
            selection_mode="single-row",
            key=table,
            column_config={
                "open": st.column_config.LinkColumn("new tab", display_text="Open ↗", width="small"),
                "#": st.column_config.NumberColumn(width="small"),
                "agreement": st.column_config.NumberColumn(
                    format="%.2f", help="The task's metric, teacher vs gold."
                ),
                "gold": st.column_config.TextColumn("gold answer", width="medium"),
                "teacher": st.column_config.TextColumn("teacher's answer", width="medium"),
            },
            placeholder="",
        )
        st.caption(
            "Most different first. Select a row to open the teacher's answer on Review: one you "
            "reject there is not trained on (curation.sme)."
        )
        if ref := st.session_state.pop("gold_open", None):
            st.switch_page("views/review.py", query_params={"item": ref})


@st.fragment(run_every=10)
def outputs_view(store: Store, exp_id: str) -> None:
    """Per-example test outputs of one finished run, a page at a time."""
    runs = [r for r in store.list_runs(exp_id) if r["status"] == "succeeded"]
    if not runs:
        return
    with st.expander("Per-example outputs"):
        labels = {r["id"]: f"n={r['train_size']} seed {r['seed']} · {r['id']}" for r in runs}
        pick, page_box = st.columns([4, 1])
        run_id = pick.selectbox("Run", list(labels), format_func=labels.__getitem__)
        page = page_box.number_input("Page", min_value=1, value=1, step=1)
        frame, pages = ui.outputs_page(store, run_id, int(page))
        if frame.empty:
            st.caption("This run saved no per-example outputs.")
        else:
            st.dataframe(frame, hide_index=True)
            st.caption(f"Page {min(int(page), pages)} of {pages}")


def versus_teacher_view(store: Store, exp_id: str) -> None:
    """Each run against the teacher, by a pairwise judge: how close is the student?"""
    rows = pairwise_job.versus_teacher(store, exp_id)
    with st.expander(
        "Against the teacher (pairwise judge)", expanded=bool(rows), icon=":material/compare_arrows:"
    ):
        if rows:
            st.plotly_chart(ui.versus_teacher_figure(rows), key="versus_teacher_chart")
            st.dataframe(
                ui.versus_teacher_frame(rows),
                hide_index=True,
                column_config={
                    "student score": st.column_config.ProgressColumn(
                        min_value=0.0, max_value=1.0, format="%.2f"
                    )
                },
            )
            st.caption(
                "Student score = (student wins + ties / 2) / decided pairs on the test split, each pair "
                "asked in both orders: 0.5 means as good as the teacher."
            )
        else:
            st.caption(
                "No run has been judged against the teacher yet. The teacher's own model judges each "
                "test answer of a run against its answer, in both orders (Calibration → Head to head "
                "for other judges and rubrics)."
            )
        actor = st.session_state["actor"]
        if not actor.can(Right.LAUNCH):
            st.caption(ui.role_note(actor, Right.LAUNCH, "queue judges"))
        elif st.button("Judge every finished run against the teacher", key="vs_teacher"):
            try:
                queued = pairwise_job.launch_versus_teacher(store, exp_id, actor=actor)
            except ValueError as err:
                st.error(f"Not queued: {err}")
            else:
                if queued and ui.autostart_enabled():
                    jobs.ensure_scheduler(store)
                st.success(
                    f"Queued {len(queued)} comparison(s)."
                    if queued
                    else "Every finished run is judged already."
                )


store = Store()
exps = store.list_experiments()
if not exps:
    st.info("No experiments yet. Click **Run the demo** on Overview, or configure one on Launch.")
    st.page_link("views/overview.py", label="Overview", icon=":material/home:")
    st.page_link("views/launch.py", label="Launch", icon=":material/rocket_launch:")
    st.stop()
ids = [e["id"] for e in exps]
labels = {e["id"]: ui.experiment_label(e) for e in exps}
state = curves.parse_query(st.query_params.to_dict(), ids, [])
focus = ui.focus_index(ids, state["experiment"] or st.session_state.get("focus_experiment"))
exp_id = st.selectbox("Experiment", ids, index=focus, format_func=labels.__getitem__)
st.session_state["focus_experiment"] = exp_id
metric_names = ablation.curve.experiment_metrics(store, exp_id)
exp_spec = ExperimentSpec.model_validate(next(e for e in exps if e["id"] == exp_id)["spec"])
default_metric = exp_spec.curve_metric()
state = curves.parse_query(st.query_params.to_dict(), ids, metric_names)
pick, axis_box, target_box = st.columns([3, 2, 1])
compare = pick.multiselect(
    "Compare with",
    [i for i in ids if i != exp_id],
    default=[c for c in state["compare"] if c != exp_id],
    format_func=labels.__getitem__,
    help="Experiments on the same task and test split share the plot; the spec diff says what differs.",
)
metric = (
    axis_box.selectbox(
        "Metric",
        metric_names,
        index=metric_names.index(state["metric"] or default_metric)
        if (state["metric"] or default_metric) in metric_names
        else 0,
    )
    if metric_names
    else None
)
axis = axis_box.radio(
    "Axis",
    curves.AXES,
    index=curves.AXES.index(state["axis"]),
    format_func={"absolute": "score", "percent_of_teacher": "% of teacher"}.__getitem__,
    horizontal=True,
)
target_box.text_input(
    "Target", key="abl_target", placeholder="100%", help="A score (0.9) or a share of the teacher (95%)"
)
st.query_params.from_dict(curves.to_query(exp_id, compare, metric, axis))
curve_view(store, exp_id, compare, metric, axis)
grow_view(store, exp_id, metric)
versus_teacher_view(store, exp_id)
gold_view(store, exp_id, exp_spec)
outputs_view(store, exp_id)
discussion_view(store, exp_id)
export_view(store, exp_id, compare, metric)
