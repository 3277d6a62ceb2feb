"""Specs: defaults validate, YAML round-trips, bad values are refused naming the field."""

from __future__ import annotations

import pytest

from engine.specs import ExperimentSpec, SpecError, TaskSpec, TeacherSpec, load_spec


def test_default_spec_round_trips_through_yaml() -> None:
    spec = ExperimentSpec(name="x")
    again = load_spec(spec.to_yaml())
    assert again == spec
    assert again.fingerprint() == spec.fingerprint()


def test_fingerprint_changes_with_content() -> None:
    a = ExperimentSpec(name="x")
    b = load_spec(a.to_yaml(), ["student.learning_rate=0.01"])
    assert a.fingerprint() != b.fingerprint()
    assert b.student.learning_rate == 0.01


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("student:\n  learnig_rate: 0.1\n", "student.learnig_rate"),
        ("student:\n  learning_rate: -1\n", "student.learning_rate"),
        ("ablation:\n  train_sizes: [10, 10]\n", "ablation.train_sizes"),
        ("ablation:\n  train_sizes: [100000]\n", "ablation.train_sizes"),
        ("teacher:\n  kind: openai\n", "base_url"),
        ("teacher:\n  kind: demo\n  api_key_env: sk-abc123\n", "teacher.api_key_env"),
        ("task:\n  prompt_template: 'no placeholder'\n", "task.prompt_template"),
        ("student:\n  tiny:\n    hidden_size: 100\n    num_heads: 3\n", "student.tiny"),
    ],
)
def test_bad_values_name_the_field(yaml_text: str, field: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(yaml_text)
    assert field in str(err.value)


def test_invalid_yaml_names_the_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: ok\nstudent: [unclosed\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "line" in str(err.value)


def test_overrides_parse_yaml_scalars() -> None:
    spec = load_spec("", ["ablation.train_sizes=[20, 10]", "ablation.seeds=[1,2]", "name=abc"])
    assert spec.ablation.train_sizes == [10, 20]
    assert spec.ablation.seeds == [1, 2]
    assert spec.name == "abc"


def test_api_key_is_only_a_name() -> None:
    t = TeacherSpec(base_url="http://127.0.0.1:1/v1", api_key_env="MY_KEY")
    assert "MY_KEY" in t.model_dump_json()
    with pytest.raises(ValueError):
        TeacherSpec(base_url="http://x/v1", api_key_env="sk-live-123")


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{input}{input:>5000000}", "format specs"),  # grew the database by 100 MB
        ("{input:d}", "format specs"),  # crashed the import
        ("{input!r}", "conversions"),
        ("{input.foo}", "attribute and index"),  # crashed the import
        ("{input[0]}", "attribute and index"),
        ("{question}", "unknown placeholder {question}"),
        ("{} {input}", "unknown placeholder {}"),
        ("{{input}}", "must contain the {input} placeholder"),
        ("Q: {input} }", "Single '}'"),
    ],
)
def test_prompt_template_is_parsed_not_searched(template: str, why: str) -> None:
    yaml_text = f"task:\n  prompt_template: {template!r}\n"
    with pytest.raises(SpecError) as err:
        load_spec(yaml_text)
    assert "task.prompt_template" in str(err.value) and why in str(err.value)
    with pytest.raises(ValueError, match="prompt_template"):
        TaskSpec(prompt_template=template)


def test_plain_templates_pass() -> None:
    for template in ("{input}", "Q: {input}\nA:", "JSON {{like this}}: {input}", "{input}\n\n{input}"):
        assert TaskSpec(prompt_template=template).prompt_template == template


def test_blank_or_repeated_labels_are_refused_by_field() -> None:
    from engine.specs import SpecError, parse_spec

    base = {"task": {"output_kind": "label", "prompt_template": "{input}"}}
    with pytest.raises(SpecError, match=r"task: labels: label 2 is blank"):
        parse_spec({**base, "task": {**base["task"], "labels": ["ham", "  "]}})
    with pytest.raises(SpecError, match=r"task: labels: the same label is listed twice"):
        parse_spec({**base, "task": {**base["task"], "labels": ["ham", "ham"]}})


def test_each_demo_spec_is_its_own() -> None:
    """Changing one demo spec's teacher leaves the next demo spec as it was."""
    from engine.specs import demo_spec

    for preset in ("standard", "fast"):
        first = demo_spec(preset)
        first.teacher.api_key_env = "SOME_KEY"
        assert demo_spec(preset).teacher.api_key_env is None
