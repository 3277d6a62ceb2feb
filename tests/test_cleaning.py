"""Cleaning rules: each one's effect, counts before/after per rule, and a reason per dropped row."""

from __future__ import annotations

import pytest

from engine.data.cleaning import RULES, apply_rules, count_tokens, list_rules, strip_markup_text
from engine.data.report import Record


def rec(prompt: str, answer: str | None = "ok", line: int = 1, **meta: str) -> Record:
    return Record(input=prompt, output=answer, meta={"source": {"file": "f.jsonl", "line": line}, **meta})


def test_registry_lists_every_rule_with_defaults() -> None:
    names = {r["rule"] for r in list_rules()}
    assert names == {
        "strip_markup", "normalize_punctuation", "normalize_whitespace", "min_output_tokens",
        "instruction_equals_input", "exact_dedup", "near_dedup", "length_limits",
    }  # fmt: skip
    assert RULES["near_dedup"].params == {"threshold": 0.8}
    assert all(r["description"] for r in list_rules())


def test_strip_markup() -> None:
    text = "<p>Hello&nbsp;<b>world</b> &amp; <a href='x'>friends</a></p><br/>## Title\n**bold** and [a link](http://x.y)"
    assert strip_markup_text(text) == "Hello\xa0world & friends\n\nTitle\nbold and a link"
    # Not markup: comparisons, single asterisks, JSON.
    for keep in ("if a < b and c > d", "2*3*4 = 24", '{"a": "<5"}'):
        assert strip_markup_text(keep) == keep


def test_rewrite_rules_count_changes_and_drop_prompts_left_empty() -> None:
    records = [rec("<br>", line=1), rec("“Hi” — there…", "It’s\u00a0fine", line=2), rec("plain", line=3)]
    kept, dropped, counts = apply_rules(records, ["strip_markup", "normalize_punctuation"])
    assert [r["input"] for r in kept] == ['"Hi" - there...', "plain"]
    assert kept[0]["output"] == "It's fine"
    assert counts[0] | {"params": None} == {
        "rule": "strip_markup", "params": None, "before": 3, "after": 2, "dropped": 1, "changed": 1,
    }  # fmt: skip
    assert counts[1]["changed"] == 1 and counts[1]["dropped"] == 0
    assert dropped == [
        {"rule": "strip_markup", "reason": "the prompt is empty after stripping markup", "where": "line 1",
         "input": "", "output": "ok", "meta": records[0]["meta"]}
    ]  # fmt: skip
    assert records[1]["input"] == "“Hi” — there…", "the caller's records are not modified"


def test_normalize_whitespace() -> None:
    [r], _, _ = apply_rules([rec("  a \t b  \r\n\n\n\nc  ")], ["normalize_whitespace"])
    assert r["input"] == "a b\n\nc"


def test_min_output_tokens_keeps_unanswered_rows_unless_asked() -> None:
    records = [rec("q1", "yes", 1), rec("q2", "", 2), rec("q3", None, 3), rec("q4", "a longer answer", 4)]
    kept, dropped, _ = apply_rules(records, [{"rule": "min_output_tokens", "n": 2}])
    assert [r["input"] for r in kept] == ["q3", "q4"]
    assert [d["reason"] for d in dropped] == ["answer has 1 tokens (< 2)", "answer has 0 tokens (< 2)"]
    kept, dropped, _ = apply_rules(records, [("min_output_tokens", {"n": 2, "drop_missing": True})])
    assert [r["input"] for r in kept] == ["q4"] and dropped[-1]["reason"] == "no reference answer"


def test_instruction_equals_input() -> None:
    same = rec("x", instruction="Summarize the text below.", context="Summarize the text below!")
    different = rec("y", instruction="Summarize the text below.", context="The cat sat on the mat all day.")
    plain = rec("z")
    kept, dropped, _ = apply_rules([same, different, plain], ["instruction_equals_input"])
    assert kept == [different, plain]
    assert dropped[0]["reason"].startswith("instruction ≈ input (similarity 1.00")


def test_exact_dedup_ignores_case_punctuation_and_spacing() -> None:
    records = [
        rec("Hello, world!", "a", 1),
        rec("hello   WORLD", "b", 2),
        rec("Hello world?", "a", 3),
        rec("Bye", "c", 4),
    ]
    kept, dropped, counts = apply_rules(records, ["exact_dedup"])
    assert [r["meta"]["source"]["line"] for r in kept] == [1, 4]
    assert [d["reason"] for d in dropped] == ["exact duplicate of line 1"] * 2
    assert (counts[0]["before"], counts[0]["after"]) == (4, 2)
    kept, _, _ = apply_rules(records, [{"rule": "exact_dedup", "key": "input+output"}])
    assert [r["meta"]["source"]["line"] for r in kept] == [1, 2, 4]


def test_near_dedup_threshold_is_the_users() -> None:
    a = "Write a short poem about the sea at night, with a calm and hopeful tone."
    b = "Write a short poem about the sea at night with a calm, hopeful tone please."
    c = "Explain how vaccines train the immune system to recognise a virus."
    records = [rec(a, line=1), rec(c, line=2), rec(b, line=3)]
    kept, dropped, _ = apply_rules(records, [{"rule": "near_dedup", "threshold": 0.7}])
    assert [r["input"] for r in kept] == [a, c]
    assert dropped[0]["reason"].startswith("near-duplicate of line 1 (similarity 0.")
    kept, _, _ = apply_rules(records, [{"rule": "near_dedup", "threshold": 0.95}])
    assert len(kept) == 3


def test_length_limits() -> None:
    records = [
        rec("one two three", "x", 1),
        rec("one", "x", 2),
        rec("a b c d e f g h", "x", 3),
        rec("a b", "1 2 3 4", 4),
    ]
    rule = {"rule": "length_limits", "min_input_tokens": 2, "max_input_tokens": 5, "max_output_tokens": 3}
    kept, dropped, _ = apply_rules(records, [rule])
    assert [r["meta"]["source"]["line"] for r in kept] == [1]
    assert [d["reason"] for d in dropped] == [
        "prompt has 1 tokens (< 2)", "prompt has 8 tokens (> 5)", "answer has 4 tokens (> 3)",
    ]  # fmt: skip
    assert count_tokens("Hello, world!") == 4


def test_rules_apply_in_order_with_per_rule_counts() -> None:
    records = [
        rec(f"<i>Prompt {w}</i>", line=i) for i, w in enumerate(["alpha", "beta", "alpha", "gamma"], 1)
    ]
    kept, dropped, counts = apply_rules(records, ["strip_markup", "exact_dedup", "length_limits"])
    assert [(c["rule"], c["before"], c["after"]) for c in counts] == [
        ("strip_markup", 4, 4), ("exact_dedup", 4, 3), ("length_limits", 3, 3),
    ]  # fmt: skip
    assert len(kept) == 3 and [d["where"] for d in dropped] == ["line 3"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("polish", "unknown cleaning rule 'polish'"),
        ({"rule": "near_dedup", "treshold": 0.5}, "unknown parameter 'treshold'"),
        ({"rule": "min_output_tokens", "n": "3"}, "n must be like 1"),
        ({"rule": "strip_markup", "fields": ["prompt"]}, "fields must be"),
    ],
)
def test_bad_rule_specs_are_refused(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_rules([rec("x")], [spec])  # type: ignore[list-item]
