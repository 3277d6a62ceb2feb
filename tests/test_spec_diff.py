"""spec_diff lists changed leaves by dotted key; diff_sentence says it in one line."""

from __future__ import annotations

from engine.specs import demo_spec
from engine.ui.presets import diff_sentence, spec_diff


def test_diff_lists_changed_leaves_only() -> None:
    old = demo_spec("standard").model_dump(mode="json")
    new = demo_spec("standard").model_dump(mode="json")
    new["student"]["learning_rate"] = 5e-4
    new["student"]["lora"]["r"] = 16
    new["ablation"]["train_sizes"] = [50, 200]
    new["name"] = "other"
    assert spec_diff(old, new) == [
        ("ablation.train_sizes", [50, 100, 200, 400, 800], [50, 200]),
        ("name", "demo", "other"),
        ("student.learning_rate", 1e-3, 5e-4),
        ("student.lora.r", 8, 16),
    ]
    assert spec_diff(old, old) == []
    line = diff_sentence(old, new, "demo")
    assert line == "changes 3 parameters vs demo: ablation.train_sizes, student.learning_rate, student.lora.r"


def test_sentence_for_one_none_and_no_previous() -> None:
    old = {"a": {"b": 1, "c": 2}, "name": "x"}
    assert diff_sentence(old, {"a": {"b": 1, "c": 3}, "name": "y"}) == "changes 1 parameter: a.c"
    assert diff_sentence(old, {**old, "name": "z"}) == "same parameters"
    assert "nothing to compare" in diff_sentence(None, old)
    # A key on one side only (a field added by a newer spec version) counts as a change.
    assert spec_diff({"a": 1}, {"a": 1, "b": 2}) == [("b", None, 2)]
