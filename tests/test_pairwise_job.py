"""Head to head: the student's answers against the teacher's, by a pairwise judge in both orders."""

from __future__ import annotations

import json

import pytest

from engine.context import JobContext
from engine.jobs import _resolve
from engine.judges import pairwise as pw
from engine.judges.report import pointwise_judges
from engine.specs import SpecError
from engine.store import Store
from tests.actors import ADMIN
from tests.review_data import N, populate
from tests.test_pages import app


def _run(store: Store, job_id: str) -> None:
    job = store.get_job(job_id)
    assert job is not None
    _resolve(job["kind"])(JobContext(store=store, job=job, spec=job["spec"]))


def test_scores_count_ties_half_and_leave_failures_out() -> None:
    got = pw.score(["B", "B", "tie", "A", "error"], [True, True, False, True, True], n_boot=200)
    assert (got["b_wins"], got["ties"], got["a_wins"], got["failed"], got["inconsistent"]) == (2, 1, 1, 1, 1)
    assert got["b_score"] == pytest.approx(2.5 / 4)
    low, high = got["ci"]
    assert 0 <= low <= got["b_score"] <= high <= 1
    assert pw.score(["error"], [True])["b_score"] is None


@pytest.mark.parametrize(("use_reference", "teacher_wins"), [(False, 2), (True, 4)])
def test_student_against_teacher_on_the_demo_judge(
    store: Store, use_reference: bool, teacher_wins: int
) -> None:
    pop = populate(store)
    student, teacher = {"run_id": pop.run_id}, {"experiment_id": pop.experiment_id, "teacher": True}
    job_id = pw.launch_pairwise(
        store, student, teacher, "Correct JSON wins.", "h2h", use_reference=use_reference, actor=ADMIN
    )
    _run(store, job_id)
    (row,) = pw.head_to_head(store)
    assert (row["judge"], row["a"], row["b"], row["n"]) == (
        "h2h",
        pop.run_id,
        f"teacher.{pop.experiment_id}",
        N,
    )
    # Without a reference the demo judge can only tell broken JSON (student: 3, teacher: 1, one
    # shared); with it, every wrong field too. The student never beats its perfect-ish teacher.
    assert row["b_wins"] == teacher_wins and row["a_wins"] == 0 and row["ties"] == N - teacher_wins
    assert row["inconsistent"] == 0 and row["failed"] == 0
    assert row["b_score"] == pytest.approx((teacher_wins + (N - teacher_wins) / 2) / N)
    assert "h2h" not in pointwise_judges(store)  # winners are not accept/reject verdicts
    (shown,) = pw.head_to_head_frame(store, [row])
    assert shown["A"].startswith("n=16 seed 0") and shown["B"].endswith("teacher answers")


def test_refusals_name_the_problem(store: Store) -> None:
    pop = populate(store)
    run = {"run_id": pop.run_id}
    with pytest.raises(SpecError, match="same answers"):
        pw.launch_pairwise(store, run, run, "r", actor=ADMIN)
    with pytest.raises(SpecError, match="pairwise sides"):
        pw.launch_pairwise(store, {"run_id": pop.run_id, "teacher": True}, run, "r", actor=ADMIN)
    with pytest.raises(ValueError, match="no run 'run-missing'"):
        pw.launch_pairwise(store, {"run_id": "run-missing"}, run, "r", actor=ADMIN)
    with pytest.raises(SpecError, match="rubric"):
        pw.launch_pairwise(store, run, {"experiment_id": pop.experiment_id, "teacher": True}, "", actor=ADMIN)
    other = populate(store)  # another experiment, another dataset
    with pytest.raises(ValueError, match="answer different datasets"):
        pw.launch_pairwise(
            store,
            {"run_id": other.run_id},
            {"experiment_id": pop.experiment_id, "teacher": True},
            "r",
            actor=ADMIN,
        )
    from engine.specs import TeacherSpec

    with pytest.raises(ValueError, match="a local teacher cannot judge"):
        teacher = {"experiment_id": pop.experiment_id, "teacher": True}
        pw.launch_pairwise(
            store, run, teacher, "r", endpoint=TeacherSpec(kind="local", model="x"), actor=ADMIN
        )
    assert not [j for j in store.list_jobs() if j["kind"] == "pairwise"]
    # References come from the dataset's gold answers, whatever a side stored as its reference.
    _, pairs = pw.collect_pairs(
        store,
        pw.JudgeTarget(run_id=pop.run_id),
        pw.JudgeTarget(experiment_id=pop.experiment_id, teacher=True),
    )
    gold = {e["prompt"]: e["reference"] for e in store.get_examples(pop.dataset_id)}
    assert all(p.reference == gold[p.prompt] for p in pairs)


def test_the_calibration_page_queues_and_shows_a_head_to_head(store: Store) -> None:
    pop = populate(store)
    at = app("views/calibration.py")
    assert json.loads(at.selectbox(key="hh_b").value)["teacher"] is True  # the teacher by default
    at.text_input(key="hh_rubric").set_value("Correct JSON wins.")
    at.button(key="hh_run").click().run()
    assert not at.error, [e.value for e in at.error]
    (job,) = [j for j in store.list_jobs() if j["kind"] == "pairwise"]
    assert job["spec"]["a"] == {"run_id": pop.run_id, "experiment_id": None, "teacher": False}
    _run(store, job["id"])
    at.run()
    table = next(d.value for d in at.dataframe if "B score" in d.value.columns)
    assert list(table["pairs"]) == [N] and list(table["B wins"]) == [2]


def test_every_run_against_the_teacher_from_the_ablation_page(store: Store) -> None:
    pop = populate(store)
    assert pw.versus_teacher(store, pop.experiment_id) == []
    at = app("views/ablation.py")
    assert not at.exception and any("No run has been judged" in c.value for c in at.caption)
    at.button(key="vs_teacher").click().run()
    assert any("Queued 1 comparison(s)." in s.value for s in at.success), [e.value for e in at.error]
    (job,) = [j for j in store.list_jobs() if j["kind"] == "pairwise"]
    assert job["spec"]["judge"]["rubric"] == pw.DEFAULT_RUBRIC
    assert pw.launch_versus_teacher(store, pop.experiment_id, actor=ADMIN) == []  # already queued: not twice
    _run(store, job["id"])
    (row,) = pw.versus_teacher(store, pop.experiment_id)
    # The teacher wins 2 of 12 (broken JSON only, no reference): the student scores 5/12.
    assert (row["run_id"], row["train_size"], row["pairs"]) == (pop.run_id, 16, N)
    assert row["student_score"] == pytest.approx(5 / 12)
    low, high = row["ci"]
    assert low <= row["student_score"] <= high
    at.run()
    assert len(at.get("plotly_chart")) == 2  # the curve, and the score against the teacher
    table = next(d.value for d in at.dataframe if "student score" in d.value.columns)
    assert list(table["train size"]) == [16] and list(table["student score"]) == [pytest.approx(5 / 12)]
    at.button(key="vs_teacher").click().run()
    assert any("Every finished run is judged already." in s.value for s in at.success)


def test_an_ablation_can_queue_each_run_against_its_teacher(store: Store) -> None:
    from engine import ablation
    from engine.specs import demo_spec

    spec = demo_spec("fast")
    spec.ablation.versus_teacher = True
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    train = {j["run_id"]: j["id"] for j in store.list_jobs(experiment_id=exp_id) if j["kind"] == "train"}
    versus = [j for j in store.list_jobs(experiment_id=exp_id) if j["kind"] == "pairwise"]
    assert len(versus) == len(train) == len(spec.ablation.train_sizes)
    for job in versus:  # each waits for its run, and compares that run with the teacher
        run_id = job["spec"]["a"]["run_id"]
        assert job["depends_on"] == [train[run_id]]
        assert job["spec"]["b"] == {"run_id": None, "experiment_id": exp_id, "teacher": True}
    local = demo_spec("fast")
    local.ablation.versus_teacher = True
    local.teacher = local.teacher.model_copy(update={"kind": "local", "model": "some/model"})
    with pytest.raises(SpecError, match=r"ablation\.versus_teacher: a local teacher cannot judge"):
        ablation.launch_experiment(store, local, actor=ADMIN)
