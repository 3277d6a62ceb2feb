"""Every page through Streamlit's AppTest, empty and populated (no browser, no workers).

The conftest sets ``SENSEI_NO_AUTOSTART=1``, so the app never spawns a scheduler here; the
"finished" states are written straight through Store methods, as a worker would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import ablation
from engine.specs import AblationSpec, demo_spec
from engine.store import Store
from tests.actors import ADMIN

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(autouse=True)
def _no_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    # Belt and braces: even without the conftest, AppTests must never leave processes behind.
    monkeypatch.setenv("SENSEI_NO_AUTOSTART", "1")


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# A team server's [auth] section (never used to sign in here: AppTest supplies st.user).
AUTH_SECRETS = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "test-cookie-secret",
        "client_id": "sensei",
        "client_secret": "test-client-secret",
        "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
    }
}
ROLE_CLAIM = "sensei_role"


def sign_in_as(at: AppTest, name: str, role: str = "annotator") -> AppTest:
    """Make ``at``'s next runs those of a team server with ``name`` signed in (subject
    ``sub-<name>``, as :func:`tests.actors.person`) holding ``role`` through an ID-token claim."""
    roles = Path(os.environ["SENSEI_HOME"]) / "roles.toml"
    roles.parent.mkdir(parents=True, exist_ok=True)
    roles.write_text(f'roles_claim = "{ROLE_CLAIM}"\n', encoding="utf-8")
    at.secrets = AUTH_SECRETS
    at.user = {"is_logged_in": True, "sub": f"sub-{name}", "name": name, ROLE_CLAIM: role}
    return at


def texts(at: AppTest) -> str:
    """All visible text of the common kinds, joined (for 'does the page say X' checks)."""
    parts = [*at.title, *at.markdown, *at.caption, *at.info, *at.warning, *at.success, *at.error]
    return "\n".join(str(p.value) for p in parts)


def queued_experiment(store: Store) -> str:
    return ablation.launch_experiment(store, demo_spec("fast"), actor=ADMIN)


def finished_experiment(store: Store) -> str:
    """An experiment whose every job succeeded: metrics, loss curves, outputs, one event."""
    spec = demo_spec("fast").model_copy(
        update={"ablation": AblationSpec(train_sizes=[16, 32, 64], seeds=[0, 1], zero_shot=False)}
    )
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    teacher = next(j for j in store.list_jobs(experiment_id=exp_id) if j["kind"] == "teacher")
    store.mark_started(teacher["id"], os.getpid(), None)
    store.finish_job(teacher["id"], "succeeded", exit_code=0, message="done")
    for run in store.list_runs(exp_id):
        n, seed = run["train_size"], run["seed"]
        store.mark_started(run["job_id"], os.getpid(), None)
        for step in range(0, 12, 2):
            store.log_metrics(run["id"], step, {"loss": 4.0 / (1 + step) + 0.3 * (64 / n)})
        store.set_run_metrics(run["id"], {"field_accuracy": 0.9 - 6.0 / n + 0.01 * seed, "exact_match": 0.1})
        store.save_outputs(
            run["id"],
            [
                {
                    "idx": i,
                    "prompt": f"Message {i}",
                    "output": '{"intent": "refund"}',
                    "reference": '{"intent": "refund"}',
                    "scores": {"field_accuracy": 1.0},
                }
                for i in range(25)
            ],
        )
        store.finish_job(run["job_id"], "succeeded", exit_code=0, message="done")
    store.add_event("warning", "loss_spike", "loss jumped at step 4", job_id=run["job_id"], run_id=run["id"])
    return exp_id


# ------------------------------------------------------------------------------ empty
def test_overview_empty_explains_and_offers_the_demo() -> None:
    at = app()
    text = texts(at)
    assert "Teacher" in text and "Ablation" in text
    assert "Click **Run the demo**, or go to **Launch**" in text
    assert at.button[0].label == "Run the demo"


@pytest.mark.parametrize("page", ["views/runs.py", "views/ablation.py"])
def test_live_pages_empty_state_points_to_the_demo(page: str) -> None:
    at = app(page)
    assert "No experiments yet" in texts(at) and "Run the demo" in texts(at)
    assert not at.dataframe and not at.get("plotly_chart")


def test_launch_prefills_the_standard_demo() -> None:
    at = app("views/launch.py")
    assert at.text_input(key="f.ablation.train_sizes").value == "50, 100, 200, 400, 800"
    assert "name: demo" in at.text_area(key="spec_yaml").value
    assert not at.error


def test_sidebar_shows_workspace_and_who_acts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENSEI_LOCAL_USER", raising=False)
    monkeypatch.setenv("LOGNAME", "ada")  # getpass.getuser() reads LOGNAME first, then USER
    monkeypatch.setenv("USER", "ada")
    at = app()
    assert not at.sidebar.text_input  # nobody types who they are any more
    assert ":material/person: **ada** · admin" in [m.value for m in at.sidebar.markdown]
    assert os.environ["SENSEI_HOME"] in "\n".join(c.value for c in at.sidebar.caption)
    assert any("Scheduler" in c.value for c in at.sidebar.caption)


# -------------------------------------------------------------------------- populated
@pytest.mark.both_backends
def test_overview_lists_experiments_with_counts(store: Store) -> None:
    queued = queued_experiment(store)
    finished_experiment(store)
    at = app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Experiments"] == "2" and metrics["Runs"] == "8"
    assert metrics["Jobs queued"] == "3" and metrics["Jobs succeeded"] == "7"
    table = at.dataframe[0].value
    assert set(table["status"]) == {"queued", "succeeded"} and queued in set(table["id"])


def test_run_the_demo_queues_an_experiment_and_opens_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENSEI_DEMO_PRESET", "fast")
    at = app()
    at.button[0].click().run()
    exps = store.list_experiments()
    assert [e["name"] for e in exps] == ["demo-fast"]
    assert len(store.list_jobs(experiment_id=exps[0]["id"], statuses=["queued"])) == 3
    assert at.title[0].value == "Runs"
    assert "Status: queued" in texts(at)


@pytest.mark.both_backends
def test_runs_page_shows_jobs_and_cancels_one(store: Store) -> None:
    exp_id = queued_experiment(store)
    at = app("views/runs.py")
    table = at.dataframe[0].value
    assert list(table["kind"]) == ["teacher", "train", "train"]
    assert list(table["status"]) == ["queued"] * 3
    assert "3 queued" in texts(at)
    teacher = store.list_jobs(experiment_id=exp_id, statuses=["queued"])[-1]
    at.selectbox[1].set_value(teacher["id"])
    next(b for b in at.button if b.label == "Cancel job").click().run()
    assert store.get_job(teacher["id"])["status"] == "cancelled"
    assert f"Job {teacher['id']} cancelled." in texts(at)
    next(b for b in at.button if b.label == "Cancel experiment").click().run()
    assert {j["status"] for j in store.list_jobs(experiment_id=exp_id)} == {"cancelled"}
    assert "Status: cancelled" in texts(at)
    assert "Cancel job" not in [b.label for b in at.button]
    # Cancelled training can be resumed: a new job row for the same run, the old one kept.
    train = next(j for j in store.list_jobs(experiment_id=exp_id) if j["kind"] == "train")
    at.selectbox(key="resume_pick").set_value(train["id"])
    next(b for b in at.button if b.label == "Resume").click().run()
    new = [j for j in store.list_jobs(experiment_id=exp_id) if j["run_id"] == train["run_id"]]
    assert [j["status"] for j in new] == ["queued", "cancelled"]
    assert "resumes from its last checkpoint" in texts(at)


@pytest.mark.both_backends
def test_runs_page_finished_shows_loss_log_and_events(store: Store) -> None:
    exp_id = finished_experiment(store)
    job = store.list_jobs(experiment_id=exp_id)[0]
    with open(job["log_path"], "w") as fh:
        fh.write("step 10 loss 0.5\njob succeeded\n")
    at = app("views/runs.py")
    assert "Status: succeeded" in texts(at)
    assert len(at.get("plotly_chart")) == 1
    assert "job succeeded" in at.code[0].value
    events = at.dataframe[1].value
    assert list(events["event"]) == ["loss_spike"]


def test_ablation_page_queued_says_runs_are_in_progress(store: Store) -> None:
    queued_experiment(store)
    at = app("views/ablation.py")
    assert "still in progress" in texts(at)
    assert not at.get("plotly_chart")


@pytest.mark.both_backends
def test_ablation_page_finished_draws_the_curve(store: Store) -> None:
    exp_id = finished_experiment(store)
    queued_experiment(store)  # newer, but the selector can pick the finished one
    at = app("views/ablation.py")
    at.selectbox[0].set_value(exp_id).run()
    assert len(at.get("plotly_chart")) == 1
    assert "curve field_accuracy: 16=" in texts(at)
    # Three sizes cannot validate a fit: the page says so instead of extrapolating.
    assert "No fit: a validated fit needs at least 4 sizes (3 so far)." in texts(at)
    table = at.dataframe[0].value
    assert list(table["train_size"]) == [16, 32, 64] and list(table["seeds"]) == [2, 2, 2]
    assert (table["ci_low"] <= table["field_accuracy"]).all() and (
        table["field_accuracy"] <= table["ci_high"]
    ).all()
    runs = at.dataframe[1].value
    assert list(runs["train size"]) == [16, 16, 32, 32, 64, 64]
    outputs = next(d.value for d in at.dataframe if "idx" in d.value.columns)
    assert len(outputs) == 20 and "field_accuracy" in outputs.columns


def test_ablation_page_failed_experiment_says_so(store: Store) -> None:
    exp_id = queued_experiment(store)
    for j in store.list_jobs(experiment_id=exp_id):
        store.finish_job(j["id"], "failed", error="boom")
    at = app("views/ablation.py")
    assert "No run of this experiment finished successfully" in texts(at)


# ----------------------------------------------------------------------------- launch
def test_malformed_yaml_names_the_field_and_queues_nothing(store: Store) -> None:
    at = app("views/launch.py")
    bad = demo_spec("fast").to_yaml().replace("learning_rate: 0.003", "learning_rat: 0.003")
    at.text_area(key="spec_yaml").set_value(bad)
    at.button(key="yaml_launch").click().run()
    assert "student.learning_rat" in at.error[0].value and "nothing was queued" in at.error[0].value
    assert store.list_experiments() == [] and store.list_jobs() == []

    at.text_area(key="spec_yaml").set_value("name: [unclosed\n")
    at.button(key="yaml_validate").click().run()
    assert "invalid YAML" in at.error[0].value
    assert store.list_jobs() == []


def test_yaml_tab_launches_a_valid_spec(store: Store) -> None:
    at = app("views/launch.py")
    at.text_area(key="spec_yaml").set_value(demo_spec("fast").to_yaml())
    at.button(key="yaml_validate").click().run()
    assert "Valid:" in at.success[0].value and store.list_jobs() == []
    at.button(key="yaml_launch").click().run()
    (exp,) = store.list_experiments()
    assert exp["name"] == "demo-fast" and exp["id"] in at.success[0].value


def test_form_refuses_bad_values_then_launches(store: Store) -> None:
    at = app("views/launch.py")
    at.text_input(key="f.ablation.train_sizes").set_value("10, many")
    at.button[0].click().run()
    assert "ablation.train_sizes" in at.error[0].value and store.list_jobs() == []

    at.text_input(key="f.name").set_value("from-the-form")
    at.text_input(key="f.ablation.train_sizes").set_value("20, 40")
    at.text_input(key="f.ablation.seeds").set_value("0, 1")
    at.button[0].click().run()
    assert not at.error
    (exp,) = store.list_experiments()
    assert exp["name"] == "from-the-form" and exp["spec"]["ablation"]["train_sizes"] == [20, 40]
    assert len(store.list_jobs(experiment_id=exp["id"])) == 1 + 1 + 2 * 2  # teacher, untrained, 2x2 grid
    assert exp["id"] in at.success[0].value
    # The new experiment is preselected on Runs.
    at.switch_page("views/runs.py").run()
    assert at.selectbox[0].value == exp["id"]


def test_runs_page_keeps_the_experiment_in_the_url(store: Store) -> None:
    older = queued_experiment(store)
    newer = queued_experiment(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["experiment"] = older  # a reload, or a shared link
    at.run()
    at.switch_page("views/runs.py").run()
    assert at.selectbox[0].value == older
    at.selectbox[0].set_value(newer).run()
    assert at.query_params["experiment"] == newer


def test_runs_page_ignores_an_unknown_experiment_in_the_url(store: Store) -> None:
    newest = queued_experiment(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["experiment"] = "exp-nope"
    at.run()
    at.switch_page("views/runs.py").run()
    assert not at.exception
    assert at.selectbox[0].value == newest
    assert at.query_params["experiment"] == newest


def test_runs_log_panel_shows_newest_first_searches_and_downloads(store: Store) -> None:
    exp_id = finished_experiment(store)
    job = store.list_jobs(experiment_id=exp_id)[0]
    lines = [f"step {i} loss {1 / (i + 1):.3f}" for i in range(200)]
    lines[50] = "WARNING loss spike at step 50"
    with open(job["log_path"], "w") as fh:
        fh.write("\n".join(lines) + "\n")
    at = app("views/runs.py")
    at.selectbox[1].set_value(job["id"]).run()
    shown = at.code[0].value.splitlines()
    assert shown[0] == "step 199 loss 0.005" and "step 0 loss" not in at.code[0].value
    assert "Last 40 of 200 lines, newest first" in texts(at)
    at.text_input(key="log_query").set_value("SPIKE").run()
    assert at.code[0].value == "WARNING loss spike at step 50"
    assert "1 of 200 lines contains “SPIKE”" in texts(at)
    at.text_input(key="log_query").set_value("nowhere").run()
    assert not at.code and "0 of 200 lines contain “nowhere”" in texts(at)
    (download,) = at.get("download_button")
    assert download.proto.label == "Download the whole log"


def test_sidebar_says_starting_after_start_scheduler(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from engine import jobs

    # Stands in for the detached process (none is started): alive, not yet holding the lock.
    monkeypatch.setattr(jobs, "_spawn_scheduler", lambda _s, _i: SimpleNamespace(pid=os.getpid()))
    at = app()
    assert "Scheduler idle" in "\n".join(c.value for c in at.sidebar.caption)
    at.button(key="start_scheduler").click().run()
    captions = "\n".join(c.value for c in at.sidebar.caption)
    assert "Scheduler starting…" in captions and "idle" not in captions
