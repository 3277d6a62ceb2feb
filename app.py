"""Sensei dashboard entry point: ``streamlit run app.py``.

Sidebar (workspace, who am I, scheduler) and the page registry. Pages live in ``views/`` and
only draw what ``engine.ui.common`` computes; the engine's scheduler runs the jobs in detached
processes, so closing the browser never stops an experiment.

The first run of each workspace starts that scheduler (``jobs.ensure_scheduler``, which is
idempotent); launching an experiment also wakes it. Set ``SENSEI_NO_AUTOSTART=1`` to never
start one from the app (the AppTest suite does, so tests leave no processes behind).

Why ``views/`` and not ``pages/``: Streamlit treats a ``pages/`` folder beside the main script
as a legacy multipage app until ``st.navigation`` has run once, so a deep link as a fresh
server's first request (a bookmark, a link from Calibration to Review) ran the page alone,
without this sidebar. ``views/`` has no such magic; ``st.navigation`` owns every URL.
"""

from __future__ import annotations

import getpass

import streamlit as st

from engine import jobs
from engine.store import Store
from engine.ui import common as ui

st.set_page_config(page_title="Sensei", page_icon=":material/school:", layout="wide")


@st.cache_resource(show_spinner=False)
def _scheduler_started(home: str) -> bool:
    """Start the workspace's scheduler once per server process and workspace."""
    return ui.start_scheduler(Store(home))


def _whoami() -> str:
    try:
        return getpass.getuser()  # $USER etc., else the password database
    except (KeyError, OSError):
        return ""


store = Store()
_scheduler_started(str(store.home))

pages = [
    st.Page("views/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("views/data.py", title="Data", icon=":material/dataset:"),
    st.Page("views/teacher.py", title="Teacher", icon=":material/psychology:"),
    st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:"),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:"),
    st.Page("views/ablation.py", title="Ablation", icon=":material/show_chart:"),
    st.Page("views/chat.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("views/review.py", title="Review", icon=":material/rate_review:"),
    st.Page("views/calibration.py", title="Judge calibration", icon=":material/balance:"),
    st.Page("views/rules.py", title="Rules", icon=":material/rule:"),
]
page = st.navigation(pages)

with st.sidebar:
    st.session_state.setdefault("annotator", _whoami())
    st.text_input("Who am I", key="annotator", help="Your name, recorded with labels you give.")
    st.caption(f"Workspace: `{store.home}`")

    @st.fragment(run_every=5)
    def _scheduler_status() -> None:
        state = jobs.scheduler_state(store)
        if state == "running":
            st.caption(":green[●] Scheduler running")
            return
        if state == "starting":  # asked for (here, by a launch or by another tab), not up yet
            st.caption(":orange[●] Scheduler starting…")
            return
        st.caption(":gray[●] Scheduler idle — it starts when you launch")
        st.button(
            "Start scheduler",
            key="start_scheduler",
            width="stretch",
            on_click=jobs.ensure_scheduler,
            args=(store,),
        )

    _scheduler_status()

page.run()
