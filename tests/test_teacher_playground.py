"""Teacher playground and page helpers, without Streamlit, against the real demo teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data.datasets import ensure_dataset
from engine.demo.simulated_teacher import start_demo_teacher
from engine.specs import AblationSpec, DataSpec, SpecError, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.client import MissingApiKeyError
from engine.teacher.playground import (
    MAX_ROWS,
    Variant,
    answer_caption,
    compare,
    launch_teacher_job,
    run_variant,
    variant_labels,
)
from engine.ui import teacher as teacher_view
from tests.actors import ADMIN
from tests.test_teacher_job import dataset_of, make_ctx, summary

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL

FAST = demo_spec("fast")


def variant(label: str, **teacher: object) -> Variant:
    values = {**teacher_view.variant_defaults(FAST), **{f"teacher.{k}": v for k, v in teacher.items()}}
    return Variant(label, teacher_view.variant_spec(FAST, values))


def test_a_variant_answers_rows_with_validity_score_tokens_and_cost(store: Store) -> None:
    rows = teacher_view.demo_rows(3)
    answers = run_variant(store, variant("A", demo_error_rate=0.0), rows)
    assert [a["output"] for a in answers] == [r["reference"] for r in rows]
    assert all(a["valid"] and a["score"] == 1.0 and a["error"] is None for a in answers)
    assert all(a["input_tokens"] > 0 and a["output_tokens"] > 0 and a["cost_usd"] > 0 for a in answers)
    with pytest.raises(ValueError, match=f"at most {MAX_ROWS} rows"):
        run_variant(store, variant("A"), teacher_view.demo_rows(MAX_ROWS + 1))


def test_two_variants_side_by_side_on_the_same_rows(store: Store) -> None:
    rows = teacher_view.demo_rows(4)
    good, sloppy = variant("A", demo_error_rate=0.0), variant("B", demo_error_rate=1.0)
    table, numbers = compare(store, [good, sloppy], rows, dataset_size=1000, actor=ADMIN)
    assert variant_labels(table) == ["A", "B"]
    assert {"input", "reference", "A valid", "B score", "B tokens", "A latency_s", "B cached"} <= set(
        table.columns
    )
    line = table.iloc[0].to_dict()
    assert answer_caption(line, "A", "field_accuracy").startswith("A · valid ✓ · field_accuracy 1.00 · ")
    assert table["A valid"].all() and list(table["A answer"]) == [r["reference"] for r in rows]
    assert (table["B answer"] != table["reference"]).all()  # every answer of B is a mistake
    a, b = numbers.to_dict("records")
    assert a["valid"] == 1.0 and a["field_accuracy"] == 1.0 and b["field_accuracy"] < 1.0
    assert a["answered"] == "4/4" and a["cached"] == 0
    assert a["projected cost (USD)"] > 100 * a["cost (USD)"] > 0


def test_playground_answers_are_free_for_the_full_job(store: Store) -> None:
    spec = FAST.model_copy(
        update={
            "data": DataSpec(demo_examples=30, test_size=5),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
        }
    )
    rows = teacher_view.dataset_rows(store, ensure_dataset(store, spec))[:3]
    run_variant(store, Variant("A", spec), rows)
    ctx = make_ctx(store, spec)
    teacher_job.main(ctx)
    assert summary(ctx)["cached"] == 3 and summary(ctx)["http_requests"] == 27
    assert len(store.get_teacher_responses(dataset_of(ctx), spec.teacher_key())) == 30


def test_a_key_handed_in_is_used_and_never_written(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = teacher_view.demo_rows(2)
    data = tmp_path / "a.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"prompt": FAST.task.prompt_template.format(input=r["input"]), "reference": r["reference"]}
            )
            + "\n"
            for r in rows
        )
    )
    monkeypatch.delenv("SENSEI_TEST_SECRET_NAME", raising=False)
    monkeypatch.setenv("SENSEI_KEY_ENVS", "SENSEI_TEST_SECRET_NAME")
    with start_demo_teacher(data, error_rate=0.0) as url:
        v = variant(
            "A", kind="openai", base_url=url, model="demo-teacher", api_key_env="SENSEI_TEST_SECRET_NAME"
        )
        with pytest.raises(MissingApiKeyError, match="SENSEI_TEST_SECRET_NAME"):
            run_variant(store, v, rows)
        v.api_key = "sk-test-from-streamlit-secrets-42"
        assert "sk-test" not in repr(v)
        answers = run_variant(store, v, rows)
    assert [a["output"] for a in answers] == [r["reference"] for r in rows]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"from-streamlit-secrets" in p.read_bytes()]


def test_form_values_become_a_validated_spec() -> None:
    values = teacher_view.variant_defaults(FAST)
    assert values["teacher.kind"] == "demo" and values["teacher.base_url"] == ""
    assert values["teacher.requests_per_minute"] == 0
    spec = teacher_view.variant_spec(
        FAST, {**values, "teacher.requests_per_minute": 120, "task.system_prompt": "Be terse."}
    )
    assert spec.teacher.requests_per_minute == 120 and spec.teacher.tokens_per_minute is None
    assert spec.task.system_prompt == "Be terse." and spec.teacher.base_url is None
    with pytest.raises(SpecError) as err:
        teacher_view.variant_spec(
            FAST, {**values, "teacher.kind": "openai", "task.prompt_template": "no slot"}, "A"
        )
    assert str(err.value).splitlines() == [
        "A: task.prompt_template: prompt_template must contain the {input} placeholder",
        "A: teacher: base_url: an openai-kind teacher needs a base_url",
    ]


def test_key_status_never_shows_the_value_nor_looks_up_an_undeclared_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENSEI_KEY_ENVS", "SENSEI_TEST_KEY_STATUS,SENSEI_TEST_NO_SUCH_VAR")
    monkeypatch.setenv("SENSEI_TEST_KEY_STATUS", "sk-value")
    monkeypatch.delenv("SENSEI_TEST_NO_SUCH_VAR", raising=False)
    assert teacher_view.key_status("SENSEI_TEST_KEY_STATUS") == "set"
    assert teacher_view.key_status("SENSEI_TEST_NO_SUCH_VAR") == "not set"
    assert teacher_view.key_status(None) == "no key needed"
    monkeypatch.setenv("SENSEI_TEST_UNDECLARED", "sk-other")
    assert teacher_view.key_status("SENSEI_TEST_UNDECLARED") == "not declared"
    monkeypatch.delenv("SENSEI_TEST_UNDECLARED")
    assert teacher_view.key_status("SENSEI_TEST_UNDECLARED") == "not declared"


def test_rows_from_text_and_labels() -> None:
    rows = teacher_view.typed_rows("first\n\n  second line \n")
    assert [r["input"] for r in rows] == ["first", "second line"] and rows[0]["reference"] is None
    assert teacher_view.row_label({"idx": 3, "input": "a  b\nc" + "x" * 100}, width=10) == "#3 · a b cxxxxx…"


def test_a_teacher_only_launch_queues_one_job_and_shows_in_the_jobs_table(
    store: Store, empty_store: Store
) -> None:
    exp_id = launch_teacher_job(store, FAST, actor=ADMIN)
    exp = store.get_experiment(exp_id)
    assert exp is not None and exp["name"] == "demo-fast · teacher only"
    (job,) = store.list_jobs(experiment_id=exp_id)
    assert job["kind"] == "teacher" and job["status"] == "queued"
    store.mark_started(job["id"], 1, None)
    store.set_progress(job["id"], 0.5, "teacher 70/140 · $0.0123")
    frame = teacher_view.teacher_jobs_frame(store)
    assert frame.iloc[0].to_dict()["message"] == "teacher 70/140 · $0.0123"
    assert frame.iloc[0]["status"] == "running" and frame.iloc[0]["eta"] != ""
    assert teacher_view.teacher_jobs_frame(empty_store).empty
