"""Sensei dashboard entry point: ``streamlit run app.py``.

Sidebar (workspace, signed-in user, scheduler) and the page registry. Pages live in ``views/``
and only draw what ``engine.ui.common`` computes; the engine's scheduler runs the jobs in
detached processes, so closing the browser never stops an experiment.

Who acts (``st.session_state["actor"]``, an :class:`engine.access.Actor` every page passes to
the engine, which refuses what the role may not do):

* with ``[auth]`` in ``.streamlit/secrets.toml``, everyone signs in through OpenID Connect
  (``st.login``); roles come from a claim, ``<workspace>/roles.toml`` or an admin, and the
  first user of a workspace becomes its admin (:func:`engine.access.sign_in`);
* without it, the dashboard runs in **local single-user mode**: the server's own user acts as
  admin, which is only safe on 127.0.0.1, so any other address is refused.

The first run of each workspace starts that scheduler (``jobs.ensure_scheduler``, which is
idempotent); launching an experiment also wakes it. Set ``SENSEI_NO_AUTOSTART=1`` to never
start one from the app (the AppTest suite does, so tests leave no processes behind).

Why ``views/`` and not ``pages/``: Streamlit treats a ``pages/`` folder beside the main script
as a legacy multipage app until ``st.navigation`` has run once, so a deep link as a fresh
server's first request (a bookmark, a link from Calibration to Review) ran the page alone,
without this sidebar. ``views/`` has no such magic; ``st.navigation`` owns every URL.
"""

from __future__ import annotations

import streamlit as st

from engine import jobs
from engine.access import Actor, Right, RolesFileError, local_admin, sign_in
from engine.access.server import is_loopback
from engine.store import Store
from engine.ui import common as ui
from engine.ui.review import md_escape

st.set_page_config(page_title="Sensei", page_icon=":material/school:", layout="wide")


@st.cache_resource(show_spinner=False)
def _scheduler_started(home: str) -> bool:
    """Start the workspace's scheduler once per server process and workspace."""
    return ui.start_scheduler(Store(home))


def _auth_configured() -> bool:
    try:
        return "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all
        return False


def _signed_in(store: Store) -> Actor:
    """The acting user of this session; draws the sign-in screen and stops until there is one."""
    if not _auth_configured():
        if not is_loopback(st.get_option("server.address")):
            st.error(
                "Sensei runs in local single-user mode (no sign-in is configured), in which everyone "
                "acts as its admin, so it only listens on 127.0.0.1. To share it, configure sign-in "
                "(`[auth]` in `.streamlit/secrets.toml`) and start it with `make serve`."
            )
            st.stop()
        return local_admin()
    st.set_option("client.showErrorDetails", "none")  # outside local mode, whatever the flags say
    if not st.user.is_logged_in:
        st.title("Sensei")
        st.write("Sign in to see this workspace's experiments, label answers or launch runs.")
        st.button("Sign in", type="primary", icon=":material/login:", on_click=st.login)
        st.stop()
    try:
        return sign_in(store, st.user.to_dict())
    except (RolesFileError, ValueError) as err:
        st.error(f"You are signed in, but Sensei cannot tell your role: {err}")
        st.button("Sign out", on_click=st.logout)
        st.stop()


store = Store()
actor = _signed_in(store)
st.session_state["actor"] = actor
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
if actor.can(Right.ADMIN):
    pages.append(st.Page("views/access.py", title="Access", icon=":material/admin_panel_settings:"))
page = st.navigation(pages)

with st.sidebar:
    who = f"**{md_escape(actor.name)}** · {actor.role}"
    if actor.local:
        st.markdown(f":material/person: {who}")
        st.caption(
            "Local single-user mode: only this machine (127.0.0.1) can open the dashboard. "
            "Configure sign-in to share it with a team."
        )
    else:
        st.markdown(f":material/person: Signed in as {who}")
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=st.logout)
    st.caption(f"Workspace: `{store.home}`")
    if store.db_path is None:  # the database is elsewhere (SENSEI_DB_URL), shown without credentials
        st.caption(f"Database: `{store.location}`")

    @st.fragment(run_every=5)
    def _scheduler_status() -> None:
        state = jobs.scheduler_state(store)
        if state == "running":
            st.caption(":green[●] Scheduler running")
            return
        if state == "starting":  # asked for (here, by a launch or by another tab), not up yet
            st.caption(":orange[●] Scheduler starting…")
            return
        error = jobs.scheduler_error(store)
        if error:  # the last one could not start (e.g. no Ray head at RAY_ADDRESS)
            st.caption(f":red[●] Scheduler stopped: {error}")
        else:
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
