"""Runs: live progress, loss curves, logs and cancel for one experiment's jobs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import streamlit as st

from engine import ablation, jobs
from engine.access import Right
from engine.store import Store
from engine.training import resume, wandb_links
from engine.ui import common as ui
from engine.ui import logs
from engine.words import plural

st.title("Runs")
st.write(
    "Watch an experiment's jobs live — progress, training loss, logs — cancel what you no longer need "
    "and resume what failed."
)

JOB_COLUMNS = {
    "train_size": st.column_config.TextColumn("train size", width=70),
    "seed": st.column_config.TextColumn(width=45),
    "status": st.column_config.TextColumn(width=85),
    "progress": st.column_config.ProgressColumn("progress", format="percent", width=150),
    "eta": st.column_config.TextColumn("ETA", width=65),
    "message": st.column_config.TextColumn("message / error", width="medium"),
}


# Cancels run as button callbacks, i.e. before the fragment redraws, so the table and the
# list of active jobs drawn right after already show the result.
def _cancel_job(home: str) -> None:
    job_id = st.session_state.get("cancel_pick")
    if job_id:
        ok = jobs.cancel_job(Store(home), job_id, actor=st.session_state["actor"])
        st.session_state["cancel_note"] = f"Job {job_id} {'cancelled' if ok else 'had already finished'}."


def _cancel_experiment(home: str, exp_id: str) -> None:
    n = jobs.cancel_experiment(Store(home), exp_id, actor=st.session_state["actor"])
    st.session_state["cancel_note"] = f"Experiment {exp_id}: {plural(n, 'job')} cancelled."


def _cancel_controls(store: Store, exp_id: str, job_rows: list[dict]) -> None:
    active = ui.active_jobs(job_rows)
    if not active or not st.session_state["actor"].can(Right.CANCEL):
        return
    pick, one, every = st.columns([4, 1, 1], vertical_alignment="bottom")
    labels = {j["id"]: ui.job_label(j) for j in active}
    pick.selectbox("Active job", list(labels), format_func=labels.__getitem__, key="cancel_pick")
    home = str(store.home)
    one.button("Cancel job", icon=":material/cancel:", width="stretch", on_click=_cancel_job, args=(home,))
    every.button(
        "Cancel experiment",
        icon=":material/stop_circle:",
        width="stretch",
        on_click=_cancel_experiment,
        args=(home, exp_id),
    )


def _resume_job(home: str) -> None:
    job_id = st.session_state.get("resume_pick")
    if job_id:
        try:
            new_id = resume.resume_job(Store(home), job_id, actor=st.session_state["actor"])
        except resume.ResumeError as err:
            st.session_state["cancel_note"] = f"Not resumed: {err}"
            return
        if ui.autostart_enabled():
            jobs.ensure_scheduler(Store(home))
        st.session_state["cancel_note"] = f"Job {job_id} resumes from its last checkpoint as {new_id}."


def _resume_controls(store: Store, job_rows: list[dict]) -> None:
    stopped = resume.resumable(job_rows)
    if not stopped or not st.session_state["actor"].can(Right.LAUNCH):
        return
    pick, go = st.columns([5, 1], vertical_alignment="bottom")
    labels = {j["id"]: ui.job_label(j) for j in stopped}
    pick.selectbox(
        "Failed or cancelled training",
        list(labels),
        format_func=labels.__getitem__,
        key="resume_pick",
        help="Resume continues from the run's last checkpoint, as a new job.",
    )
    home = str(store.home)
    go.button("Resume", icon=":material/replay:", width="stretch", on_click=_resume_job, args=(home,))


def _log_view(store: Store, job_rows: list[dict]) -> None:
    ordered = sorted(job_rows, key=lambda j: (j["created_at"], j["id"]))
    names = {j["id"]: ui.job_label(j, with_status=False) for j in ordered}
    log_id = st.selectbox(
        "Job", list(names), index=ui.default_log_job(ordered), format_func=names.__getitem__
    )
    job = store.get_job(log_id)
    text = jobs.read_log(job, max_bytes=logs.SEARCH_BYTES) if job else ""
    if not text:
        status = job["status"] if job else ""
        empty = {"queued": "Not started yet.", "running": "No output yet."}.get(status, "No log output.")
        st.code(empty, language=None, wrap_lines=True)
    else:
        find, order = st.columns([3, 2], vertical_alignment="bottom")
        query = find.text_input(
            "Search the log", key="log_query", placeholder="e.g. error", help="Shows the lines containing it."
        )
        newest_first = order.toggle("Newest first", value=True, key="log_newest_first")
        view = logs.log_view(text, query, newest_first=newest_first)
        if view.shown:
            st.code(view.text, language=None, height=320, wrap_lines=True)
        st.caption(view.caption(query, newest_first))
    if job and text:
        st.download_button(
            "Download the whole log",
            # A callable: the file is read when someone clicks, not on every 2-second redraw.
            data=partial(jobs.read_log, job),
            file_name=f"{job['id']}.log",
            mime="text/plain",
            icon=":material/download:",
            on_click="ignore",
            key="log_download",
        )
    if job and job.get("run_id"):
        _wandb_line(store, job["run_id"])


def _sync_wandb(home: str, run_id: str) -> None:
    info = wandb_links.find_run(Path(home), run_id)
    try:
        store = Store(home)
        actor = st.session_state["actor"]
        url = wandb_links.sync_offline(store, info, actor=actor) if info else "no W&B record"
        st.session_state["wandb_note"] = ("success", f"Synced {run_id}: {url}")
    except wandb_links.WandbSyncError as err:
        st.session_state["wandb_note"] = ("error", str(err))


def _wandb_line(store: Store, run_id: str) -> None:
    """Where the run's W&B record is: a link when online, the local folder and Sync when offline."""
    info = wandb_links.find_run(store.home, run_id)
    if info is None:
        st.caption("W&B: no record for this run (yet).")
        return
    if not info.offline:
        st.markdown(f"W&B: [{info.wandb_id}]({info.url})")
        return
    st.caption(f"W&B (offline): `{info.path}`")
    if not st.session_state["actor"].can(Right.LAUNCH):
        return
    can_sync = wandb_links.sync_available()
    st.button(
        "Sync to W&B",
        key="wandb_sync",
        disabled=not can_sync,
        help=None if can_sync else "Set WANDB_API_KEY (or run `wandb login`) to upload offline runs.",
        on_click=_sync_wandb,
        args=(str(store.home), run_id),
    )
    if note := st.session_state.pop("wandb_note", None):
        getattr(st, note[0])(note[1])


@st.fragment(run_every=2)
def live() -> None:
    """Everything below redraws every 2 s from the store."""
    store = Store()
    exps = store.list_experiments()
    if not exps:
        st.info("No experiments yet. Click **Run the demo** on Overview, or configure one on Launch.")
        st.page_link("views/overview.py", label="Overview", icon=":material/home:")
        st.page_link("views/launch.py", label="Launch", icon=":material/rocket_launch:")
        return
    ids = [e["id"] for e in exps]
    labels = {e["id"]: ui.experiment_label(e) for e in exps}
    # The URL names the experiment, so a reload or a shared link comes back to it. A value the
    # page has not seen yet wins over the one last viewed; an unknown one is ignored.
    url_exp = ui.experiment_from_url(st.query_params.get("experiment"), ids)
    if url_exp and url_exp != st.session_state.get("runs_url_experiment"):
        st.session_state["focus_experiment"] = url_exp
    focus = ui.focus_index(ids, st.session_state.get("focus_experiment"))
    exp_id = st.selectbox("Experiment", ids, index=focus, format_func=labels.__getitem__)
    st.session_state["focus_experiment"] = st.session_state["runs_url_experiment"] = exp_id
    if st.query_params.get("experiment") != exp_id:
        st.query_params["experiment"] = exp_id
    job_rows = store.list_jobs(experiment_id=exp_id)
    status = ablation.experiment_status(store, exp_id)
    st.markdown(f"**Status: {status}** — {ui.status_line(job_rows)}")
    if note := st.session_state.pop("cancel_note", None):
        st.success(note)
    _cancel_controls(store, exp_id, job_rows)
    _resume_controls(store, job_rows)
    st.dataframe(ui.jobs_frame(job_rows), hide_index=True, column_config=JOB_COLUMNS, placeholder="")

    chart, logs = st.columns([3, 2], gap="large")
    with chart:
        st.subheader("Training loss")
        fig = ui.loss_figure(store, exp_id)
        if fig is None:
            st.caption("Loss curves appear here once a training job logs its first steps.")
        else:
            st.plotly_chart(fig, key="loss_chart")
    with logs:
        st.subheader("Log")
        _log_view(store, job_rows)

    events = ui.events_frame(store, job_rows)
    with st.expander(f"Events ({len(events)})", expanded=bool(len(events))):
        if events.empty:
            st.caption("Nothing notable yet (worker deaths, cancels and failures show up here).")
        else:
            st.dataframe(events, hide_index=True, placeholder="")


live()
