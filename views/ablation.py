"""Ablation: the marginal-utility curve of an experiment — what more data buys."""

from __future__ import annotations

import streamlit as st

from engine import ablation, jobs
from engine.judges import pairwise as pairwise_job
from engine.store import ACTIVE, Store
from engine.ui import common as ui

st.title("Ablation")
st.write(
    "See how the student's score grows with the number of training examples, and what "
    "the next 100 examples are worth."
)


@st.cache_data(ttl=3, show_spinner=False)
def _curve(home: str, exp_id: str) -> ablation.Curve | None:
    return ablation.experiment_curve(Store(home), exp_id)


@st.fragment(run_every=5)
def curve_view(store: Store, exp_id: str) -> None:
    """The curve redraws itself while runs finish."""
    curve = _curve(str(store.home), exp_id)
    if curve is None or not curve.sizes:
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
    st.plotly_chart(ui.curve_figure(curve), key="curve_chart")
    st.caption(curve.summary_line())
    if fit := ui.fit_sentence(curve):
        st.caption(fit)
    elif len(curve.sizes) < 3:
        st.caption("A power-law fit (and its extrapolation) needs at least three sizes.")
    st.dataframe(
        ui.curve_frame(curve),
        hide_index=True,
        column_config={
            "train_size": st.column_config.NumberColumn("train size"),
            curve.metric: st.column_config.NumberColumn(format="%.4f"),
            "std": st.column_config.NumberColumn("std over seeds", format="%.4f"),
            "gain_per_100": st.column_config.NumberColumn("gain per +100 examples", format="%+.4f"),
        },
    )


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
        if st.button("Judge every finished run against the teacher", key="vs_teacher"):
            try:
                queued = pairwise_job.launch_versus_teacher(store, exp_id)
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
focus = ui.focus_index(ids, st.session_state.get("focus_experiment"))
exp_id = st.selectbox("Experiment", ids, index=focus, format_func=labels.__getitem__)
st.session_state["focus_experiment"] = exp_id
curve_view(store, exp_id)
versus_teacher_view(store, exp_id)
outputs_view(store, exp_id)
