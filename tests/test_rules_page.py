"""The Rules page through AppTest: empty state, adding each kind, errors, delete, stats, injection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from engine.review import items as review
from engine.review import rules_file
from engine.scoring.rules import apply_rules
from engine.store import Store
from tests.review_data import populate
from tests.test_pages import app, texts

RULES = "views/rules.py"

# kind -> widget values that make a valid rule of it
VALID: dict[str, dict[str, Any]] = {
    "regex_must_match": {"rule_pattern": r"^\{", "rule_ignore_case": True},
    "regex_must_not_match": {"rule_pattern": "Sure!"},
    "keywords_forbidden": {"rule_keywords": "Acme\nGlobex Corp"},
    "forbidden_phrases": {"rule_phrases": "as an AI language model"},
    "length_bounds": {"rule_min": 2, "rule_max": 400},
    "json_schema": {"rule_schema": '{"type": "object", "required": ["intent"]}'},
    "required_fields": {"rule_fields": "intent\ncustomer.name"},
}


def add(at: AppTest, kind: str, name: str, values: dict[str, Any]) -> AppTest:
    at.selectbox(key="rule_kind").set_value(kind).run()
    at.text_input(key="rule_name").set_value(name)
    for key, value in values.items():
        if key in ("rule_min", "rule_max"):
            at.number_input(key=key).set_value(value)
        elif key in ("rule_ignore_case", "rule_case_sensitive", "rule_allow_empty"):
            at.checkbox(key=key).set_value(value)
        elif key == "rule_pattern":
            at.text_input(key=key).set_value(value)
        else:
            at.text_area(key=key).set_value(value)
    at.button(key="rule_add").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_empty_state_explains_both_kinds() -> None:
    at = app(RULES)
    page = texts(at)
    assert "No rules yet" in page and "Declarative rules" in page and "Python label functions" in page
    assert "never" in page


def test_add_every_kind_then_delete(store: Store) -> None:
    at = app(RULES)
    assert set(at.selectbox(key="rule_kind").options) == set(VALID)
    for kind, values in VALID.items():
        add(at, kind, f"r_{kind}", values)
        assert not at.error, [e.value for e in at.error]
    saved = rules_file.read_rules(store.home)
    assert [r.kind for r in saved] == list(VALID)
    assert saved[2].keywords == ["Acme", "Globex Corp"]  # type: ignore[union-attr]
    at.button(key="rule_del_r_length_bounds").click().run()
    assert "r_length_bounds" not in [r.name for r in rules_file.read_rules(store.home)]
    assert "Deleted rule" in texts(at)


def test_invalid_regex_names_the_field_and_saves_nothing(store: Store) -> None:
    at = add(app(RULES), "regex_must_match", "bad", {"rule_pattern": "(unclosed"})
    (error,) = at.error
    assert "pattern" in error.value and "invalid regular expression" in error.value
    assert not rules_file.rules_path(store.home).exists()
    add(at, "length_bounds", "short", {"rule_max": 400})
    at = add(at, "regex_must_match", "bad", {"rule_pattern": "(unclosed"})
    (error,) = at.error  # the rule named in words: its position, name and kind; no "1.regex_must_match"
    assert "new rule: rule 2 'bad' (regex_must_match): pattern: invalid regular expression" in error.value
    assert "regex_must_match.pattern" not in error.value and error.value.count("'bad'") == 1
    at = add(at, "json_schema", "bad_schema", {"rule_schema": "{not json"})
    assert "schema" in at.error[0].value
    assert [r.name for r in rules_file.read_rules(store.home)] == ["short"]


def test_stats_table_on_a_populated_run(store: Store) -> None:
    populate(store)  # writes a rules.yaml with two rules
    at = app(RULES)
    (table,) = at.dataframe
    frame = table.value
    assert list(frame["rule"]) == ["starts_with_brace", "has_fields"]
    assert {"coverage", "overlap", "conflict"} <= set(frame.columns)
    assert frame["coverage"].max() > 0


@pytest.mark.parametrize("field", ["rule_pattern", "rule_keywords"])
def test_rule_text_is_data_never_code(store: Store, tmp_path: Path, field: str) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    kind = "regex_must_not_match" if field == "rule_pattern" else "keywords_forbidden"
    at = add(app(RULES), kind, "evil", {field: payload})
    assert not at.error, [e.value for e in at.error]
    (rule,) = rules_file.read_rules(store.home)
    stored = rule.pattern if field == "rule_pattern" else rule.keywords[0]  # type: ignore[union-attr]
    assert stored == payload
    rules, _ = review.load_workspace_rules(store.home)
    (result,) = apply_rules(rules, "an ordinary answer")
    assert result.passed
    assert apply_rules(rules, payload)[0].rule == "evil"  # the payload is only text to match
    assert not marker.exists()
