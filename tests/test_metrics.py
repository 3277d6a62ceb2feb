"""Per-example metrics against hand-computed values."""

from __future__ import annotations

import pytest

from engine.scoring import metrics
from engine.scoring.metrics import aggregate, field_matches, metric_names, score
from engine.specs import TaskSpec

JSON_TASK = TaskSpec(output_kind="json", json_fields=["intent", "product", "order_id", "urgency"])
LABEL_TASK = TaskSpec(output_kind="label", labels=["spam", "ham"])
TEXT_TASK = TaskSpec(output_kind="text")
REF = '{"intent": "refund", "product": "phone", "order_id": "A00042", "urgency": "high"}'


def test_json_key_order_and_spacing_do_not_matter() -> None:
    out = '{"urgency":"high","order_id":"A00042",\n "product": "phone", "intent": "refund"}'
    s = score(JSON_TASK, out, REF)
    assert s == {"exact_match": 1.0, "json_valid": 1.0, "field_accuracy": 1.0, "fuzzy": 1.0}


def test_invalid_json_scores_zero_but_fuzzy_gives_partial_credit() -> None:
    out = '{"intent": "refund", "product": "phone", "order_id":'
    s = score(JSON_TASK, out, REF)
    assert s["json_valid"] == 0.0 and s["exact_match"] == 0.0 and s["field_accuracy"] == 0.0
    assert 0.5 < s["fuzzy"] < 1.0
    assert score(JSON_TASK, "[1, 2]", REF)["json_valid"] == 0.0  # valid JSON, but not an object
    assert score(JSON_TASK, "Sure! " + REF, REF)["json_valid"] == 0.0  # prose around it


def test_field_accuracy_partial() -> None:
    # intent right, product wrong, order_id right, urgency missing -> 2 of 4 fields.
    out = '{"intent": "refund", "product": "laptop", "order_id": "A00042"}'
    s = score(JSON_TASK, out, REF)
    assert s["field_accuracy"] == pytest.approx(0.5)
    assert s["exact_match"] == 0.0 and s["json_valid"] == 1.0


def test_field_accuracy_values_are_compared_as_json() -> None:
    task = TaskSpec(output_kind="json")  # no json_fields: the reference's keys count
    ref = '{"n": 2, "ok": true, "tags": ["a", "b"]}'
    assert score(task, '{"n": 2.0, "ok": true, "tags": ["a", "b"]}', ref)["field_accuracy"] == 1.0
    # true is not 1, and list order matters: 1 of 3 fields right.
    assert score(task, '{"n": 2, "ok": 1, "tags": ["b", "a"]}', ref)["field_accuracy"] == pytest.approx(1 / 3)
    # Extra keys do not hurt field accuracy but do break exact match.
    s = score(task, '{"n": 2, "ok": true, "tags": ["a", "b"], "x": 0}', ref)
    assert s["field_accuracy"] == 1.0 and s["exact_match"] == 0.0


def test_label_and_text_tasks() -> None:
    assert metric_names(LABEL_TASK) == ["exact_match", "label_valid", "fuzzy"]
    assert score(LABEL_TASK, " Spam\n", "spam") == {"exact_match": 1.0, "label_valid": 1.0, "fuzzy": 1.0}
    s = score(LABEL_TASK, "eggs", "spam")
    assert s["exact_match"] == 0.0 and s["label_valid"] == 0.0
    # "hello  world" vs "hello word": whitespace collapses; Indel distance 1 over 21 chars.
    s = score(TEXT_TASK, "hello  world", "hello word")
    assert s["exact_match"] == 0.0
    assert s["fuzzy"] == pytest.approx(1 - 1 / 21)
    assert set(score(TEXT_TASK, "a", "a")) == {"exact_match", "fuzzy"}


def test_aggregate_means_and_n() -> None:
    rows = [{"exact_match": 1.0, "fuzzy": 0.5}, {"exact_match": 0.0, "fuzzy": 1.0}, {"exact_match": 1.0}]
    agg = aggregate(rows)
    assert agg["exact_match"] == pytest.approx(2 / 3)
    assert agg["fuzzy"] == pytest.approx(0.75)  # mean over the rows that have it
    assert agg["n"] == 3
    assert aggregate([]) == {"n": 0.0}


def test_registry_plugs_in_new_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))

    @metrics.register("starts_with_brace", kinds=("json",))
    def _brace(task: TaskSpec, output: str, reference: str) -> float:
        return float(output.lstrip().startswith("{"))

    assert score(JSON_TASK, " {}", REF)["starts_with_brace"] == 1.0
    assert "starts_with_brace" not in score(TEXT_TASK, "{}", "{}")
    with pytest.raises(ValueError, match="already registered"):
        metrics.register("fuzzy")(_brace)


def test_field_matches_says_which_fields_differ() -> None:
    out = '{"intent": "refund", "product": "laptop", "order_id": "A00042", "note": "x"}'
    assert field_matches(JSON_TASK, out, REF) == {
        "intent": True,
        "product": False,
        "order_id": True,
        "urgency": False,
    }
    # every_key also compares the keys outside json_fields: "note" is only in the answer.
    assert field_matches(JSON_TASK, out, REF, every_key=True) == {
        "intent": True,
        "product": False,
        "order_id": True,
        "urgency": False,
        "note": False,
    }
    assert field_matches(JSON_TASK, "Sure! " + REF, REF) is None
