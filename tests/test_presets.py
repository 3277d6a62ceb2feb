"""Launch presets are valid specs with the settings they promise."""

from __future__ import annotations

import pytest

from engine.specs import ExperimentSpec, SpecError, StudentSpec
from engine.store import Store
from engine.ui import launch_form, presets
from tests.actors import ADMIN


@pytest.mark.parametrize("label", list(presets.PRESETS))
def test_every_preset_validates_and_round_trips_through_the_form(label: str) -> None:
    spec = presets.preset(label)
    assert isinstance(spec, ExperimentSpec)
    assert ExperimentSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert launch_form.spec_from_form(launch_form.form_defaults(spec), spec) == spec


def test_tiny_preset_is_the_cpu_demo() -> None:
    s = presets.preset("Tiny student on CPU (demo)").student
    assert s.model == "tiny" and not s.lora.enabled


def test_gpu_preset_is_qlora_on_a_7b_instruct_model() -> None:
    s = presets.preset("7-8B student on one 24 GB GPU").student
    assert s.model == "Qwen/Qwen2.5-7B-Instruct"
    assert s.lora.enabled and s.lora.r == 16 and s.lora.alpha == 32 and s.lora.target_modules == "all-linear"
    assert s.learning_rate == 2e-4 and s.batch_size == 4 and s.max_length == 1024
    fields = StudentSpec.model_fields
    if "gradient_accumulation_steps" in fields:
        assert s.gradient_accumulation_steps == 4
    if "quantization" in fields:
        assert s.quantization == "4bit"
    if "precision" in fields:
        assert s.precision == "bf16"


def test_launch_page_switches_preset_and_shows_the_diff(store: Store) -> None:
    from tests.test_pages import app, queued_experiment

    at = app("views/launch.py")
    assert "first experiment" in at.info[0].value
    queued_experiment(store)  # demo-fast: the newest experiment to compare with
    at.run()
    line = at.info[0].value
    assert line.startswith("changes ") and "vs demo-fast" in line and "student.max_steps" in line

    at.selectbox(key="preset").set_value("7-8B student on one 24 GB GPU").run()
    assert at.text_input(key="f.student.model").value == "Qwen/Qwen2.5-7B-Instruct"
    assert at.checkbox(key="f.student.lora.enabled").value is True
    assert at.text_input(key="f.student.lora.target_modules").value == "all-linear"
    assert "student.lora.r" in at.info[0].value and "Qwen" in at.text_area(key="spec_yaml").value

    at.number_input(key="f.student.lora.r").set_value(32).run()
    at.button(key="form_launch").click().run()
    assert not at.error, [e.value for e in at.error]
    spec = store.list_experiments()[0]["spec"]
    assert spec["student"]["lora"]["r"] == 32 and spec["student"]["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert at.info[0].value == "same parameters vs qwen7b-qlora."


def _leaf_fields(model: type, prefix: str = "") -> set[str]:
    from pydantic import BaseModel

    out: set[str] = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out |= _leaf_fields(sub, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def test_the_form_edits_every_setting_but_the_task() -> None:
    # The task (prompt template, output kind) comes from the preset or the YAML tab.
    wanted = {k for k in _leaf_fields(ExperimentSpec) if k != "version" and not k.startswith("task.")}
    assert wanted - set(launch_form.FORM_FIELDS) == set()


def test_optional_numbers_in_the_form() -> None:
    values = launch_form.form_defaults()
    assert values["student.save_steps"] == "100" and values["teacher.requests_per_minute"] == ""
    values |= {"student.save_steps": "", "teacher.requests_per_minute": "1,200", "curation.judge": " j "}
    spec = launch_form.spec_from_form(values)
    assert spec.student.save_steps is None and spec.teacher.requests_per_minute == 1200
    assert spec.curation.judge == "j"
    with pytest.raises(SpecError, match=r"teacher\.tokens_per_minute: expected a whole number"):
        launch_form.spec_from_form(values | {"teacher.tokens_per_minute": "lots"})


def test_launch_refuses_names_the_workspace_does_not_know(store: Store) -> None:
    from engine import ablation
    from engine.specs import demo_spec

    spec = demo_spec("fast")
    spec.curation.judge = "strcit"
    with pytest.raises(SpecError, match=r"curation\.judge: no judge named 'strcit'.*judges: none yet"):
        ablation.launch_experiment(store, spec, actor=ADMIN)
    spec.curation.judge = None
    spec.data.dataset, spec.data.source = "my-tickets", "dataset"
    with pytest.raises(SpecError, match=r"data\.dataset: no dataset with id or name 'my-tickets'"):
        ablation.launch_experiment(store, spec, actor=ADMIN)
    assert store.list_experiments() == [] and store.list_jobs() == []  # nothing queued
    store.save_judge_verdicts("strict", [{"item_ref": "run:r:1", "verdict": "accept"}])
    spec = demo_spec("fast")
    spec.curation.judge = "strict"
    assert ablation.launch_experiment(store, spec, actor=ADMIN)
    with pytest.raises(SpecError, match="expected a whole number"):
        launch_form.parse_optional_int("1,2", "student.save_steps")
    assert launch_form.parse_optional_int("12,000", "x") == 12000
