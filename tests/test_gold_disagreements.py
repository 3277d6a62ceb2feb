"""Where the teacher's and the gold answers disagree, on a real store (tests/gold_data.py)."""

from __future__ import annotations

import json

import pytest

from engine import ablation
from engine.review import items as review
from engine.review.gold import gold_disagreements
from engine.review.items import experiment_teachers
from engine.specs import demo_spec, parse_spec
from engine.store import Store
from tests.actors import ADMIN, person
from tests.gold_data import DIFFERENT, N_TRAIN, gold_experiment

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL


def test_training_examples_whose_teacher_answer_differs_come_most_different_first(store: Store) -> None:
    case = gold_experiment(store)
    result = gold_disagreements(store, case.experiment_id)
    assert result.reason is None
    assert result.compared == N_TRAIN - 2 and result.no_teacher == 1 and result.no_gold == 1
    # Only training examples, and the same answer in another key order is no disagreement.
    assert {r.idx for r in result.rows} == DIFFERENT
    by_idx = {r.idx: r for r in result.rows}
    assert [r.idx for r in result.rows[:2]] == [2, 5]  # not JSON (0), then two fields wrong (0.5)
    assert by_idx[2].agreement == 0.0 and by_idx[2].how == "not a JSON object" and by_idx[2].fields == ()
    assert by_idx[5].agreement == pytest.approx(0.5) and set(by_idx[5].fields) == {"product", "urgency"}
    assert by_idx[7].agreement == pytest.approx(0.75) and by_idx[7].how == "fields: urgency"
    # A key outside the task's fields does not lower field accuracy, but it is a difference.
    assert by_idx[9].agreement == pytest.approx(0.75) and by_idx[9].fields == ("urgency", "note")
    assert result.by_field == {"urgency": 3, "product": 1, "note": 1}
    # Rows carry what the page shows, and a ref the Review page opens.
    row = by_idx[7]
    gold, teacher = json.loads(row.gold), json.loads(row.teacher)
    assert (
        gold["urgency"] != teacher["urgency"]
        and row.input in store.get_examples(case.dataset_id)[7]["prompt"]
    )
    assert row.ref == case.ref(7)
    assert review.parse_ref(row.ref) == {
        "kind": "teacher",
        "dataset_id": case.dataset_id,
        "teacher_key": case.spec.teacher_key(),
        "idx": 7,
    }
    assert result.summary() == (
        "The teacher's answer differs from the gold answer on 4 of 14 training examples (29%); "
        "fields that differ most: urgency (3), product (1), note (1); "
        "left out: 1 without a gold answer, 1 without a teacher answer."
    )


def test_an_experiment_that_asks_no_teacher_or_has_no_data_yet_says_why(store: Store) -> None:
    gold_only = gold_experiment(store, vary={})
    spec = gold_only.spec.model_copy(deep=True)
    spec.student.recipe = "gold"
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    result = gold_disagreements(store, exp_id)
    assert result.rows == [] and "no teacher was asked" in (result.reason or "")
    assert result.summary() == result.reason

    queued = ablation.launch_experiment(store, demo_spec("fast"), actor=ADMIN)  # its teacher job has not run
    result = gold_disagreements(store, queued)
    assert result.compared == 0 and "has not built" in (result.reason or "")
    with pytest.raises(KeyError):
        gold_disagreements(store, "exp_nope")
    with pytest.raises(KeyError):
        gold_disagreements(store, queued, teacher_key="not-a-teacher")


def test_an_experiment_that_varies_its_teacher_compares_each_teachers_answers(store: Store) -> None:
    data = demo_spec("fast").model_dump(mode="json")
    data["ablation"]["vary"] = {"teacher.demo_error_rate": [0.0, 0.3]}
    spec = parse_spec(data)
    teachers = experiment_teachers(spec)
    assert len(teachers) == 2
    assert [label.split(" · ")[1] for label in teachers.values()] == [
        "teacher.demo_error_rate=0.0",
        "teacher.demo_error_rate=0.3",
    ]
    case = gold_experiment(store, vary=data["ablation"]["vary"])
    exact, noisy = list(teachers)
    train = store.get_examples(case.dataset_id, "train")
    store.save_teacher_responses(
        case.dataset_id,
        exact,
        [{"idx": e["idx"], "request_hash": "h", "output": e["reference"]} for e in train],
    )
    store.save_teacher_responses(
        case.dataset_id, noisy, [{"idx": e["idx"], "request_hash": "h", "output": "{}"} for e in train]
    )
    assert gold_disagreements(store, case.experiment_id).teacher_key == exact
    assert gold_disagreements(store, case.experiment_id).rows == []
    noisy_rows = gold_disagreements(store, case.experiment_id, teacher_key=noisy).rows
    assert len(noisy_rows) == N_TRAIN - 1 and all(r.agreement == 0.0 for r in noisy_rows)
    assert noisy_rows[0].fields == ("intent", "product", "order_id", "urgency")


def test_the_teachers_answers_are_a_review_source_scored_against_gold(store: Store) -> None:
    case = gold_experiment(store)
    prefix = review.teacher_prefix(case.dataset_id, case.spec.teacher_key())
    store.add_annotation(case.ref(7), "reject", "wrong field value", actor=person("ada"))
    (answers,) = review.review_sources(store)  # no run has outputs yet: only the teacher's answers
    assert answers["id"] == prefix and answers["n_outputs"] == N_TRAIN + 4 - 1
    assert answers["n_labelled"] == 1 and "teacher's answers" in answers["label"]
    assert review.source_of(case.ref(7)) == prefix and review.source_of("nonsense") is None

    items = {it.idx: it for it in review.build_items(store, prefix)}
    assert 13 not in items and len(items) == N_TRAIN + 4 - 1  # every split; #13 has no answer
    # Failed = the teacher's answer is not the gold one (the test split's #17 included).
    assert {i for i, it in items.items() if it.failed} == DIFFERENT | {17}
    it = items[7]
    assert it.answer_of == "teacher" and it.run_id is None and it.teacher is None
    assert (
        it.scores["field_accuracy"] == pytest.approx(0.75)
        and it.reference == store.get_examples(case.dataset_id)[7]["reference"]
    )
    assert [a["label"] for a in it.labels] == ["reject"]
    assert items[14].reference is None and items[14].scores == {}


def test_an_sme_reject_on_a_disagreeing_teacher_answer_keeps_it_out_of_training(store: Store) -> None:
    from engine.judges.curation import curate  # what the train job's pool keeps

    case = gold_experiment(store)
    sft = dict(case.spec.variant_specs())['"sft"']
    before = set(curate(store, sft, case.dataset_id).kept_indices)
    assert {5, 7} <= before
    for row in gold_disagreements(store, case.experiment_id).rows[1:3]:  # #5 and one of #7, #9
        store.add_annotation(row.ref, "reject", actor=person("ada"))
    after = set(curate(store, sft, case.dataset_id).kept_indices)
    assert before - after == {r.idx for r in gold_disagreements(store, case.experiment_id).rows[1:3]}
