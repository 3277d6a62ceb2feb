"""Overview: what is in the workspace, and the one-click demo."""

from __future__ import annotations

import streamlit as st

from engine.access import Right
from engine.specs import demo_spec
from engine.store import Store
from engine.ui import common as ui

store = Store()
actor = st.session_state["actor"]

st.title("Sensei")
st.write(
    "Distil a large teacher model into a small student and measure how much each extra "
    "training example is worth."
)

if not actor.can(Right.LAUNCH):
    st.caption(ui.role_note(actor, Right.LAUNCH, "run the demo or launch experiments"))
elif st.button(
    "Run the demo",
    type="primary",
    icon=":material/play_arrow:",
    help="Queue the built-in ablation: simulated teacher, tiny student, offline.",
):
    exp_id = ui.launch(store, demo_spec(ui.demo_preset()), actor=actor)
    st.session_state["focus_experiment"] = exp_id
    st.switch_page("views/runs.py")

summary = store.summary()
if not summary["experiments"]:
    st.subheader("Nothing here yet")
    st.markdown(
        "- **Task** — what the student must learn, e.g. turn a support message into JSON.\n"
        "- **Teacher** — a large model (any OpenAI-compatible endpoint) that answers the prompts.\n"
        "- **Student** — the small model trained on the teacher's answers.\n"
        "- **Run** — one training of the student on *n* examples with one seed.\n"
        "- **Ablation** — the same student trained on growing *n*: the curve shows what the "
        "next 100 examples buy.\n"
    )
    st.info("Click **Run the demo**, or go to **Launch** to configure your own experiment.")
    st.page_link("views/launch.py", label="Launch an experiment", icon=":material/rocket_launch:")
    st.stop()


@st.fragment(run_every=5)
def workspace_view() -> None:
    """Counts and recent experiments, refreshed every 5 s while jobs run."""
    summary = store.summary()
    cols = st.columns(6)
    cols[0].metric("Experiments", summary["experiments"])
    cols[1].metric("Runs", summary["runs"])
    for col, status in zip(cols[2:], ("running", "queued", "succeeded", "failed"), strict=True):
        col.metric(f"Jobs {status}", summary.get(f"jobs_{status}", 0))
    st.subheader("Recent experiments")
    st.dataframe(
        ui.experiments_frame(store, limit=20),
        hide_index=True,
        column_config={"done": st.column_config.ProgressColumn("jobs done", format="percent")},
        placeholder="",
    )


workspace_view()
with st.container(horizontal=True, gap="large"):
    st.page_link("views/runs.py", label="Watch runs live", icon=":material/monitoring:")
    st.page_link("views/ablation.py", label="See the curves", icon=":material/show_chart:")
