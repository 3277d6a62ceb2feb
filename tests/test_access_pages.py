"""Sign-in, local single-user mode and the Access page through AppTest (no browser).

A team server is simulated as Streamlit's AppTest allows: an ``[auth]`` section in the secrets
and ``st.user`` claims; the roles come through a claim named in the workspace's roles.toml.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from engine.store import Store
from tests.actors import ADMIN
from tests.test_pages import APP, AUTH_SECRETS, app, queued_experiment, sign_in_as, texts

ACCESS = "views/access.py"


def opens_access(at: AppTest) -> bool:
    """Whether the Access page opens for this session (it is registered for admins only)."""
    try:
        at.switch_page(ACCESS)
    except ValueError as err:  # AppTest refuses a page st.navigation did not register
        assert "Could not find a navigation page" in str(err)
        return False
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return "Access" in [t.value for t in at.title]


def test_local_mode_opens_straight_into_the_dashboard_as_the_local_admin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENSEI_LOCAL_USER", "tess")
    at = app()
    text = texts(at)
    assert "**tess** · admin" in text and "Local single-user mode" in text
    assert "Run the demo" in [b.label for b in at.button]
    assert not [b for b in at.button if b.label == "Sign out"]


@pytest.fixture
def exposed() -> Iterator[None]:
    """The server bound to every interface, as ``--server.address 0.0.0.0`` would."""
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    yield
    st_config.set_option("server.address", before)


@pytest.mark.usefixtures("exposed")
def test_local_mode_refuses_any_address_but_loopback(store: Store) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "only listens on 127.0.0.1" in at.error[0].value and "make serve" in at.error[0].value
    assert not at.button and store.list_users() == []


@pytest.fixture
def dev_details() -> Iterator[None]:
    """Error details on, as ``SENSEI_DEV=1 make run`` asks."""
    before = st_config.get_option("client.showErrorDetails")
    st_config.set_option("client.showErrorDetails", "full")
    yield
    st_config.set_option("client.showErrorDetails", before)


@pytest.mark.usefixtures("dev_details")
def test_a_team_server_hides_error_details_whatever_the_flags(store: Store) -> None:
    sign_in_as(AppTest.from_file(APP, default_timeout=60), "vic", "viewer").run()
    assert st_config.get_option("client.showErrorDetails") == "none"


def test_a_team_server_asks_to_sign_in_first(store: Store) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets = AUTH_SECRETS
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Sign in to see this workspace" in texts(at)
    assert store.list_users() == [] and store.list_experiments() == []


def test_signed_in_users_see_only_what_their_role_may_do(store: Store) -> None:
    queued_experiment(store)
    at = sign_in_as(AppTest.from_file(APP, default_timeout=60), "vic", "viewer").run()
    assert "Signed in as **vic** · viewer" in texts(at)
    assert "Run the demo" not in [b.label for b in at.button]
    assert "Your role (viewer) cannot run the demo or launch experiments" in texts(at)
    at.switch_page("views/runs.py").run()
    assert not at.exception and "cancel_pick" not in [s.key for s in at.selectbox]
    at.switch_page("views/launch.py").run()
    assert at.button(key="form_launch").disabled and at.button(key="yaml_launch").disabled

    at = sign_in_as(AppTest.from_file(APP, default_timeout=60), "lena", "launcher").run()
    assert "Run the demo" in [b.label for b in at.button]
    at.switch_page("views/runs.py").run()
    assert "cancel_pick" in [s.key for s in at.selectbox]
    assert not opens_access(at)


def _admin_on_access_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets = AUTH_SECRETS
    at.user = {"is_logged_in": True, "sub": "sub-boss", "name": "Boss", "sensei_role": "admin"}
    at.run()
    assert opens_access(at)
    return at


def test_an_admin_sets_roles_and_reads_the_audit_log_on_the_access_page(store: Store) -> None:
    sign_in_as(AppTest.from_file(APP, default_timeout=60), "vic", "viewer").run()  # role by claim
    kim = AppTest.from_file(APP, default_timeout=60)
    kim.secrets = AUTH_SECRETS
    kim.user = {"is_logged_in": True, "sub": "sub-kim", "name": "kim"}  # no claim: the default role
    kim.run()
    at = _admin_on_access_page()
    users = at.dataframe[1].value.set_index("subject")
    assert users.loc["sub-kim", "role"] == "viewer" and users.loc["sub-kim", "role from"] == "default"
    assert users.loc["sub-vic", "role from"] == "claim sensei_role"

    at.selectbox(key="role_user").set_value("sub-kim")
    at.selectbox(key="role_pick").set_value("launcher")
    at.button(key="role_set").click().run()
    assert not at.error and store.get_user("sub-kim")["role"] == "launcher"
    kim.run()  # kim's next page view has the new role
    assert "Signed in as **kim** · launcher" in texts(kim)

    at.selectbox(key="role_user").set_value("sub-vic")  # the identity provider decides vic's role
    at.selectbox(key="role_pick").set_value("admin")
    at.button(key="role_set").click().run()
    assert "comes from the claim sensei_role" in at.error[0].value
    assert store.get_user("sub-vic")["role"] == "viewer"

    log = at.dataframe[2].value
    assert {"first sign-in", "set role"} <= set(log["action"])
    done = log[log["action"] == "set role"].iloc[0]
    assert (done["who"], done["target"], done["outcome"]) == ("Boss", "sub-kim", "done")


def test_the_access_page_refuses_anyone_but_an_admin(store: Store) -> None:
    at = sign_in_as(AppTest.from_file(APP, default_timeout=60), "lena", "launcher").run()
    assert not opens_access(at)  # not in a launcher's navigation
    assert store.audit_log(actor=ADMIN, action="read the audit log", outcome="refused") == []
