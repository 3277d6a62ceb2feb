"""An experiment on an imported dataset: the same examples and frozen split, its own prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data.datasets import ensure_dataset
from engine.data.importing import import_dataset
from engine.specs import ExperimentSpec, SpecError, TaskSpec, TeacherSpec, load_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from tests.test_teacher_job import make_ctx

GOOD = Path(__file__).parent / "data" / "good" / "prompt_completion.jsonl"


def _imported(store: Store) -> str:
    ds_id, report = import_dataset(store, GOOD, task=TaskSpec(name="qa"), name="qa", test_size=2, seed=0)
    assert ds_id is not None, report.error_text()
    return ds_id


def _spec(dataset: str, template: str = "{input}") -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "name": "on-import",
            "task": {"name": "qa", "prompt_template": template},
            "data": {"source": "dataset", "dataset": dataset},
            "teacher": TeacherSpec(kind="demo").model_dump(),
            "ablation": {"train_sizes": [2, 4]},
        }
    )


def test_same_task_uses_the_imported_dataset_itself(store: Store) -> None:
    ds_id = _imported(store)
    assert ensure_dataset(store, _spec(ds_id)) == ds_id
    assert ensure_dataset(store, _spec("qa")) == ds_id  # by name: the newest version


def test_other_template_derives_a_dataset_with_the_same_split(store: Store) -> None:
    ds_id = _imported(store)
    derived = ensure_dataset(store, _spec("qa", "Answer briefly.\nQ: {input}\nA:"))
    assert derived != ds_id
    before, after = store.get_examples(ds_id), store.get_examples(derived)
    assert [(e["idx"], e["split"], e["input"]) for e in before] == [
        (e["idx"], e["split"], e["input"]) for e in after
    ]
    assert all(e["prompt"] == f"Answer briefly.\nQ: {e['input']}\nA:" for e in after)
    assert ensure_dataset(store, _spec("qa", "Answer briefly.\nQ: {input}\nA:")) == derived


def test_unknown_dataset_and_missing_name_are_refused(store: Store) -> None:
    _imported(store)
    with pytest.raises(ValueError, match=r"data.dataset: no dataset .*'nope'.*qa"):
        ensure_dataset(store, _spec("nope"))
    with pytest.raises(SpecError, match=r"data: dataset:"):
        load_spec("data:\n  source: dataset\n")


def test_teacher_job_answers_an_imported_dataset(store: Store) -> None:
    ds_id = _imported(store)
    ctx = make_ctx(store, _spec(ds_id))
    teacher_job.main(ctx)
    exp = store.get_experiment(ctx.job["experiment_id"])
    assert exp["dataset_id"] == ds_id
    answers = store.get_teacher_responses(ds_id, _spec(ds_id).teacher_key())
    assert set(answers) == {e["idx"] for e in store.get_examples(ds_id)}
