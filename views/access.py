"""Access (admins only): who may do what, who signed in with which role, and the audit log."""

from __future__ import annotations

import streamlit as st

from engine.access import ROLES, RolesFileError, read_roles, roles_path, set_role
from engine.store import Store
from engine.ui import access as av

st.title("Access")
st.write(
    "Who may do what in this workspace, who has signed in with which role, and everything that was "
    "launched, cancelled, labelled or refused, by whom."
)

store = Store()
actor = st.session_state["actor"]

st.subheader("Roles")
st.dataframe(av.rights_frame(), hide_index=True, placeholder="")
path = roles_path(store.home)
try:
    config = read_roles(store.home)
except RolesFileError as err:
    st.error(f"Nobody can sign in until this is fixed: {err}")
else:
    claim = f"the `{config.roles_claim}` claim of the identity provider, then " if config.roles_claim else ""
    st.caption(
        f"A user's role comes from {claim}`{path}` ({len(config.users)} listed), then the role set "
        f"below; the first user of a workspace becomes its admin, later ones get `{config.default_role}`."
    )

st.subheader("Users")
users = store.list_users()
if actor.local:
    st.caption(
        "Local single-user mode: you act as the server's own user (admin). Signed-in users appear here "
        "once sign-in is configured and they use the dashboard."
    )
if users:
    st.dataframe(av.users_frame(users), hide_index=True, placeholder="")
    by_subject = {u["subject"]: u for u in users}
    with st.form("set_role"):
        c1, c2 = st.columns([3, 1])
        who = c1.selectbox(
            "User", list(by_subject), format_func=lambda s: av.user_label(by_subject[s]), key="role_user"
        )
        role = c2.selectbox("Role", ROLES, key="role_pick")
        if st.form_submit_button("Set role", key="role_set"):
            try:
                set_role(store, who, role, actor=actor)
            except ValueError as err:
                st.error(f"Not changed: {err}")
            else:
                st.success(f"{by_subject[who]['name']} is now {role}.")
                st.rerun()
else:
    st.caption("Nobody has signed in yet.")

st.subheader("Audit log")
c1, c2 = st.columns(2)
outcome = c1.segmented_control("Outcome", ["done", "refused"], key="audit_outcome")
subjects = sorted({u["subject"] for u in users} | ({actor.subject} if actor.local else set()))
subject = c2.selectbox("User", subjects, index=None, placeholder="everyone", key="audit_user")
rows = store.audit_log(actor=actor, limit=1000, subject=subject, outcome=outcome)
if rows:
    st.dataframe(av.audit_frame(rows), hide_index=True, placeholder="")
    st.caption(f"The newest {len(rows)} entries; nothing here is ever deleted or rewritten.")
else:
    st.caption("Nothing recorded yet.")
