"""The ``judge`` job in-process, against the demo teacher (a real HTTP server) playing judge."""

from __future__ import annotations

import pytest

from engine.context import JobContext
from engine.jobs import REGISTRY
from engine.judges.job import launch_judge, main
from engine.review import items as review
from engine.specs import SpecError
from engine.store import Store
from tests.actors import ADMIN
from tests.review_data import MISTAKES, N, populate
from tests.test_pages import app, texts

RUBRIC = "The answer is exactly the reference JSON."


def _run(store: Store, job_id: str) -> dict:
    job = store.get_job(job_id)
    assert job is not None and job["kind"] == "judge"
    main(JobContext(store=store, job=job, spec=job["spec"]))
    return store.get_job(job_id) or {}


def test_judges_a_run_and_rejudging_is_free(store: Store) -> None:
    assert REGISTRY["judge"] == "engine.judges.job:main"
    pop = populate(store, labels=False, judges=False)
    job_id = launch_judge(
        store, {"run_id": pop.run_id}, RUBRIC, name="demo-judge", use_reference=True, actor=ADMIN
    )
    job = _run(store, job_id)
    rows = {v["item_ref"]: v for v in store.list_judge_verdicts("demo-judge")}
    assert set(rows) == {pop.ref(i) for i in range(N)}
    for i in range(N):  # the demo judge accepts exactly the answers equal to the reference
        assert rows[pop.ref(i)]["verdict"] == ("reject" if i in MISTAKES else "accept"), i
    assert f"{N} HTTP requests" in job["message"]
    # Review sees them under the run's refs.
    items = review.build_items(store, pop.run_id)
    assert all("demo-judge" in it.judges for it in items)

    again = _run(
        store,
        launch_judge(store, {"run_id": pop.run_id}, RUBRIC, "demo-judge", use_reference=True, actor=ADMIN),
    )
    assert "0 HTTP requests" in again["message"] and f"{N} from cache" in again["message"]
    assert any(e["kind"] == "judged" for e in store.list_events(job_id=job_id))


def test_judges_teacher_answers(store: Store) -> None:
    pop = populate(store, labels=False, judges=False)
    job_id = launch_judge(
        store, {"experiment_id": pop.experiment_id, "teacher": True}, RUBRIC, "t-judge", actor=ADMIN
    )
    _run(store, job_id)
    rows = store.list_judge_verdicts("t-judge")
    key = pop.spec.teacher_key()
    assert {r["item_ref"] for r in rows} == {
        review.teacher_ref(pop.dataset_id, key, 100 + i) for i in range(N)
    }
    # Without the reference the demo judge accepts any JSON object: only the prose answer fails.
    rejected = {r["item_ref"] for r in rows if r["verdict"] == "reject"}
    assert rejected == {review.teacher_ref(pop.dataset_id, key, 104)}


def test_launch_refuses_bad_targets(store: Store) -> None:
    pop = populate(store, labels=False, judges=False)
    with pytest.raises(SpecError, match="run_id"):
        launch_judge(store, {}, RUBRIC, actor=ADMIN)
    with pytest.raises(SpecError, match="teacher: true"):
        launch_judge(store, {"experiment_id": pop.experiment_id}, RUBRIC, actor=ADMIN)
    with pytest.raises(ValueError, match="no run"):
        launch_judge(store, {"run_id": "run_nope"}, RUBRIC, actor=ADMIN)
    with pytest.raises(SpecError, match="rubric"):
        launch_judge(store, {"run_id": pop.run_id}, "", actor=ADMIN)


def test_calibration_page_queues_a_judge_job(store: Store) -> None:
    pop = populate(store, labels=False, judges=False)
    at = app("views/calibration.py")
    at.button(key="jr_run").click().run()  # no rubric yet
    assert "Not queued" in at.error[0].value and "rubric" in at.error[0].value
    assert all(j["kind"] != "judge" for j in store.list_jobs())
    at.text_area(key="jr_rubric").set_value(RUBRIC)
    at.text_input(key="jr_name").set_value("ui-judge")
    at.button(key="jr_run").click().run()
    assert not at.exception and "Queued judge job" in texts(at)
    (job,) = [j for j in store.list_jobs() if j["kind"] == "judge"]
    assert job["spec"]["target"] == {"run_id": pop.run_id, "experiment_id": None, "teacher": False}
    assert job["spec"]["judge"]["name"] == "ui-judge"
    assert job["spec"]["judge"]["endpoint"]["kind"] == pop.spec.teacher.kind  # the teacher by default


def test_calibration_page_takes_another_endpoint(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_KEY_ENVS", "JUDGE_KEY")
    populate(store, labels=False, judges=False)
    at = app("views/calibration.py")
    at.text_area(key="jr_rubric").set_value(RUBRIC)
    at.toggle(key="jr_own").set_value(True).run()
    at.text_input(key="jr_url").set_value("http://127.0.0.1:9/v1")
    at.text_input(key="jr_model").set_value("gpt-judge")
    assert at.selectbox(key="jr_key").options == ["no key", "JUDGE_KEY"]  # declared names only
    at.selectbox(key="jr_key").set_value("JUDGE_KEY")
    at.button(key="jr_run").click().run()
    (job,) = [j for j in store.list_jobs() if j["kind"] == "judge"]
    endpoint = job["spec"]["judge"]["endpoint"]
    assert (endpoint["base_url"], endpoint["model"], endpoint["api_key_env"]) == (
        "http://127.0.0.1:9/v1",
        "gpt-judge",
        "JUDGE_KEY",
    )
