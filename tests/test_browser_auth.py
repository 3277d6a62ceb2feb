"""Sign-in in a real browser: a local OpenID provider, Streamlit's st.login, two roles.

``oidc-provider-mock`` runs an OpenID Connect provider on 127.0.0.1 in this process, with two
users whose ``sensei_role`` claim makes one an annotator and the other a viewer (the
workspace's ``roles.toml`` names that claim). ``streamlit run app.py`` reads a secrets.toml
written into the test's folder (``--secrets.files``: the developer's own files are neither read
nor touched). Each user signs in through the provider's authorize page in their own browser
context: the annotator labels an answer, the viewer sees no way to, a direct engine call as
the viewer is refused, and after a reload the label names its author.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.access import AccessDenied, Actor
from engine.store import Store
from tests.loopback import free_port
from tests.review_data import Populated, populate
from tests.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    dashboard,
    live,
    shots,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["shots"]  # a fixture, imported so pytest finds it here

ROLE_CLAIM = "sensei_role"
ANN = {"sub": "ann-1", "name": "Ann Annotator", "email": "ann@example.com", ROLE_CLAIM: "annotator"}
VIC = {"sub": "vic-1", "name": "Vic Viewer", "email": "vic@example.com", ROLE_CLAIM: "viewer"}


@pytest.fixture
def oidc(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The OpenID provider on 127.0.0.1 (plain HTTP, hence Authlib's insecure-transport switch)."""
    from oidc_provider_mock import User, app
    from werkzeug.serving import make_server

    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    users = [User(sub=u["sub"], claims={k: v for k, v in u.items() if k != "sub"}) for u in (ANN, VIC)]
    server = make_server("127.0.0.1", 0, app(user_claims=users), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def team_server(store: Store, oidc: str, tmp_path: Path) -> Iterator[tuple[str, Populated]]:
    """A populated workspace served with sign-in configured; everything stopped after."""
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"{CHROMIUM} is missing: install it with `make chromium` (required in CI)")
    pop = populate(store)
    (store.home / "roles.toml").write_text(f'roles_claim = "{ROLE_CLAIM}"\n', encoding="utf-8")
    port = free_port()
    secrets_file = tmp_path / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "http://localhost:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "sensei-test"\n'
        f'client_secret = "{secrets.token_hex(16)}"\n'
        f'server_metadata_url = "{oidc}/.well-known/openid-configuration"\n',
        encoding="utf-8",
    )
    env = dict(os.environ, SENSEI_HOME=str(store.home), SENSEI_NO_AUTOSTART="1", HF_HUB_OFFLINE="1")
    with dashboard(port, store.home, env, tmp_path / "streamlit.log", "--secrets.files", str(secrets_file)):
        yield f"http://localhost:{port}", pop  # the origin of redirect_uri, for the cookies


def _sign_in(browser: Any, url: str, user: dict[str, str]) -> Any:
    """A fresh browser context (its own cookies) signed in as ``user`` through the provider."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()  # the provider's page
    page.get_by_role("button", name=user["sub"], exact=True).click()
    expect(page.get_by_text(f"Signed in as {user['name']} · {user[ROLE_CLAIM]}")).to_be_visible()
    return page


def _open_review(page: Any) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Review", exact=True).click()
    expect(page.get_by_role("heading", name="Review")).to_be_visible()
    expect(page.get_by_text("Answer 1 of 12")).to_be_visible()


def test_two_users_sign_in_and_only_the_annotator_labels(
    team_server: tuple[str, Populated], store: Store, shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, pop = team_server
    expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ann = vic = None
        try:
            ann = _sign_in(browser, url, ANN)
            _open_review(ann)
            expect(ann.get_by_text("Your verdict (as Ann Annotator)")).to_be_visible()
            live(ann).get_by_label("Note", exact=True).fill("urgency should be high")
            ann.get_by_role("button", name=re.compile("^Reject")).click()
            expect(ann.get_by_text("Saved reject for example #100.")).to_be_visible()
            ann.screenshot(path=str(shots / "auth-annotator.png"))

            vic = _sign_in(browser, url, VIC)
            expect(vic.get_by_test_id("stSidebarNav").get_by_role("link", name="Access")).to_have_count(0)
            _open_review(vic)
            expect(vic.get_by_text("Your role (viewer) cannot label answers")).to_be_visible()
            expect(vic.get_by_role("button", name=re.compile("^(Accept|Reject)"))).to_have_count(0)
            vic.screenshot(path=str(shots / "auth-viewer.png"))

            # The engine refuses the viewer whatever the page shows: a direct call, as the server
            # knows vic (role from the provider's claim).
            row = store.get_user(VIC["sub"])
            assert row is not None and (row["name"], row["role"]) == (VIC["name"], "viewer")
            as_vic = Actor(subject=row["subject"], name=row["name"], role=row["role"])
            with pytest.raises(AccessDenied, match=r"Vic Viewer \(viewer\) may not label"):
                store.add_annotation(pop.ref(1), "accept", actor=as_vic)

            vic.reload()  # the label, with its author, for everyone
            expect(vic.get_by_text("Answer 1 of 12")).to_be_visible()
            expect(vic.get_by_text(re.compile(r"^Ann Annotator — reject · "))).to_be_visible()
            expect(vic.get_by_text("urgency should be high", exact=True)).to_be_visible()
            ann.reload()
            ann.get_by_role("button", name=re.compile("^Previous")).click()
            expect(ann.get_by_text("Answer 1 of 12")).to_be_visible()
            expect(ann.get_by_text(re.compile(r"^Ann Annotator — reject · "))).to_be_visible()
        except Exception:
            for name, page in (("annotator", ann), ("viewer", vic)):
                if page is not None:
                    page.screenshot(path=str(shots / f"auth-failure-{name}.png"), full_page=True)
            raise
        finally:
            browser.close()

    labels = store.annotations(current_only=False, prefix=f"run:{pop.run_id}:")
    mine = [a for a in labels if a["annotator_sub"] == ANN["sub"]]
    assert [(a["item_ref"], a["annotator"], a["label"], a["note"]) for a in mine] == [
        (pop.ref(0), "Ann Annotator", "reject", "urgency should be high")
    ]
    assert not [a for a in labels if a["annotator_sub"] == VIC["sub"]]
    users = {u["subject"]: (u["role"], u["role_source"]) for u in store.list_users()}
    assert users == {
        ANN["sub"]: ("annotator", f"claim {ROLE_CLAIM}"),
        VIC["sub"]: ("viewer", f"claim {ROLE_CLAIM}"),
    }
    from tests.actors import ADMIN

    refused = store.audit_log(actor=ADMIN, outcome="refused")
    assert [(r["actor_sub"], r["action"]) for r in refused] == [(VIC["sub"], "label")]
