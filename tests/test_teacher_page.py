"""The Teacher page through AppTest: empty, populated, playground, A/B, secrets, launch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.data.datasets import ensure_dataset
from engine.demo.simulated_teacher import start_demo_teacher
from engine.specs import AblationSpec, DataSpec, demo_spec
from engine.store import Store
from engine.teacher.playground import launch_teacher_job
from tests.actors import ADMIN
from tests.test_pages import app, texts

PAGE = "views/teacher.py"


def test_empty_workspace_explains_what_to_do() -> None:
    at = app(PAGE)
    assert at.title[0].value == "Teacher"
    shown = texts(at)
    assert "No dataset in this workspace yet" in shown and "No teacher jobs yet" in shown
    assert at.radio(key="tp.source").options == ["Demo examples", "Type my own"]
    assert len(at.multiselect(key="tp.rows.Demo examples").value) == 3
    assert at.caption and "Key variable: **no key needed**" in shown


def test_try_then_compare_two_variants_on_demo_rows() -> None:
    at = app(PAGE)
    at.button(key="tp.run").click().run(timeout=60)
    assert not at.exception and not at.error, [e.value for e in at.error]
    numbers = at.dataframe[0].value
    assert list(numbers["variant"]) == ["A"] and list(numbers["answered"]) == ["3/3"]
    assert sum(c.value.startswith("A · valid ✓") for c in at.caption) == 3  # one card per row
    assert len(at.code) == 6  # reference and answer per row

    at.toggle(key="tp.with_b").set_value(True).run()
    at.number_input(key="tp.B.teacher.demo_error_rate").set_value(1.0).run()
    at.button(key="tp.run").click().run(timeout=60)
    assert not at.exception and not at.error, [e.value for e in at.error]
    numbers = at.dataframe[0].value
    assert list(numbers["variant"]) == ["A", "B"] and numbers["valid"].iloc[0] == 1.0
    table = at.session_state["tp.result"][0]
    assert (table["B answer"] != table["reference"]).all()
    assert len(at.code) == 9  # reference, A and B side by side for each of 3 rows


def test_a_refused_variant_names_the_field() -> None:
    at = app(PAGE)
    at.text_area(key="tp.A.task.prompt_template").set_value("no placeholder").run()
    at.button(key="tp.run").click().run()
    assert "variant A: task.prompt_template" in at.error[0].value


def test_populated_workspace_rows_from_a_dataset_and_live_jobs(store: Store) -> None:
    spec = demo_spec("fast")
    ensure_dataset(store, spec)
    exp_id = launch_teacher_job(store, spec, actor=ADMIN)
    (job,) = store.list_jobs(experiment_id=exp_id)
    store.mark_started(job["id"], 1, None)
    store.set_progress(job["id"], 0.25, "teacher 35/140 · $0.0042")
    at = app(PAGE)
    assert at.radio(key="tp.source").value == "Stored dataset"
    jobs_table = at.dataframe[-1].value
    assert list(jobs_table["message"]) == ["teacher 35/140 · $0.0042"]
    assert list(jobs_table["status"]) == ["running"]

    at.button(key="tp.launch.A").click().run()
    assert "Teacher job queued in experiment" in texts(at)
    assert len([j for j in store.list_jobs() if j["kind"] == "teacher"]) == 2


def test_a_key_from_streamlit_secrets_is_used_but_never_shown_or_written(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-page-secret-0000"
    monkeypatch.delenv("SENSEI_TEST_PAGE_KEY", raising=False)
    monkeypatch.setenv("SENSEI_KEY_ENVS", "SENSEI_TEST_PAGE_KEY")
    spec = demo_spec("fast").model_copy(
        update={
            "data": DataSpec(demo_examples=30, test_size=5),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
        }
    )
    examples = store.get_examples(ensure_dataset(store, spec))
    data = tmp_path / "a.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": e["prompt"], "reference": e["reference"]}) + "\n" for e in examples)
    )
    with start_demo_teacher(data, error_rate=0.0) as url:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
        at.secrets["SENSEI_TEST_PAGE_KEY"] = secret
        at.run()
        at.switch_page(PAGE).run()
        at.selectbox(key="tp.A.teacher.kind").set_value("openai").run()
        at.text_input(key="tp.A.teacher.base_url").set_value(url)
        at.text_input(key="tp.A.teacher.model").set_value("demo-teacher")
        at.selectbox(key="tp.A.teacher.api_key_env").set_value("SENSEI_TEST_PAGE_KEY").run()
        assert "Key variable: **not set**" in texts(at)
        at.radio(key="tp.A.key_source").set_value("Streamlit secrets").run()
        assert "Streamlit secret: **found**" in texts(at)
        at.button(key="tp.run").click().run(timeout=60)
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.session_state["tp.result"][0]
    assert list(table["A answer"]) == list(table["reference"])
    assert secret not in texts(at) and secret not in table.to_csv()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_typed_rows_are_tried_without_picking() -> None:
    at = app(PAGE)
    at.radio(key="tp.source").set_value("Type my own").run()
    assert at.button(key="tp.run").disabled
    at.text_area(key="tp.typed").set_value("Where is order A12345?\n\nCancel my laptop order A00001.").run()
    at.button(key="tp.run").click().run(timeout=60)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert list(at.dataframe[0].value["answered"]) == ["2/2"]
    assert len(at.code) == 2  # no reference: one answer per row
