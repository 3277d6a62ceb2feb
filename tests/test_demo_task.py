"""The demo task generator, prompt rendering and answer validity."""

from __future__ import annotations

import json
import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from engine.data.validate import parse_output
from engine.demo.simulated_teacher import corrupt, teacher_answer
from engine.demo.task import (
    DEMO_FIELDS,
    DEMO_TEMPLATE,
    INTENTS,
    PRODUCTS,
    URGENCIES,
    generate_examples,
    make_reference,
    render_prompt,
)
from engine.specs import TaskSpec, demo_spec


def test_same_seed_same_examples_and_prefix_stable() -> None:
    a = generate_examples(200, seed=7)
    assert a == generate_examples(200, seed=7)
    assert a[:50] == generate_examples(50, seed=7)
    assert a != generate_examples(200, seed=8)


def test_references_are_canonical_json_with_typed_fields() -> None:
    for ex in generate_examples(500, seed=1):
        assert set(ex) == {"input", "reference", "meta"}
        obj = json.loads(ex["reference"])
        assert tuple(obj) == DEMO_FIELDS  # keys in the documented order
        assert ex["reference"] == make_reference(ex["meta"])
        assert obj["intent"] in INTENTS and obj["product"] in PRODUCTS and obj["urgency"] in URGENCIES
        assert re.fullmatch(r"A\d{5}", obj["order_id"])
        assert obj["order_id"] in ex["input"]  # the answer is recoverable from the message


def test_messages_are_short_varied_and_cover_every_value() -> None:
    examples = generate_examples(1000, seed=0)
    assert max(len(ex["input"].split()) for ex in examples) <= 25
    assert len({ex["input"] for ex in examples}) == len(examples)
    # Variety of structure, not just of ids: mask the id and count distinct message shapes.
    shapes = {re.sub(r"A\d{5}", "#", ex["input"]) for ex in examples}
    assert len(shapes) > 500
    for field, values in (("intent", INTENTS), ("product", PRODUCTS), ("urgency", URGENCIES)):
        assert {ex["meta"][field] for ex in examples} == set(values)
    # Field order varies: the order id is sometimes before, sometimes after the request.
    first_is_id = [ex["input"].split(".")[0].count(ex["meta"]["order_id"]) > 0 for ex in examples]
    assert 0.1 < sum(first_is_id) / len(examples) < 0.9


def test_prompt_and_answer_fit_the_tiny_students_window() -> None:
    # The tiny student uses a 512-token byte-level BPE trained on the task text, max_length 128.
    examples = generate_examples(600, seed=0)
    texts = [render_prompt(DEMO_TEMPLATE, ex["input"]) + " " + ex["reference"] for ex in examples]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        ),
    )
    assert max(len(tok.encode(t).ids) for t in texts) <= 112


def test_render_prompt() -> None:
    assert render_prompt(DEMO_TEMPLATE, "Where is my phone?").endswith("Message: Where is my phone?\nJSON:")
    assert render_prompt("{{literal}} {input}", "x") == "{literal} x"
    with pytest.raises(ValueError, match="unknown placeholder"):
        render_prompt("{input} {other}", "x")
    demo_spec("fast")  # the shared spec module imports the demo constants


def test_parse_output_is_strict_for_json() -> None:
    task = demo_spec("fast").task
    ref = generate_examples(1, seed=0)[0]["reference"]
    assert parse_output(task, "  " + ref + "\n") == (True, json.loads(ref))
    assert parse_output(task, f"Sure! Here is the JSON: {ref}")[0] is False  # prose is not data
    assert parse_output(task, ref[:-5])[0] is False  # truncated
    assert parse_output(task, "[1, 2]")[0] is False  # not an object
    missing = json.dumps({k: v for k, v in json.loads(ref).items() if k != "urgency"})
    assert parse_output(task, missing)[0] is False
    assert parse_output(task, missing, require_fields=False)[0] is True
    assert parse_output(task, None) == (False, None)


def test_parse_output_labels_and_text() -> None:
    labels = TaskSpec(output_kind="label", labels=["yes", "no"])
    assert parse_output(labels, " yes\n") == (True, "yes")
    assert parse_output(labels, "Yes")[0] is False
    text = TaskSpec(output_kind="text")
    assert parse_output(text, " hi ") == (True, "hi")
    assert parse_output(text, "   ")[0] is False


def test_simulated_teacher_errors_are_deterministic_and_at_the_requested_rate() -> None:
    task = demo_spec("fast").task
    examples = generate_examples(1000, seed=3)
    answers = {render_prompt(DEMO_TEMPLATE, ex["input"]): ex["reference"] for ex in examples}
    results = {p: teacher_answer(p, answers, error_rate=0.2, seed=5) for p in answers}
    assert results == {p: teacher_answer(p, answers, error_rate=0.2, seed=5) for p in answers}
    wrong = {p: text for p, (text, corrupted) in results.items() if corrupted}
    assert 0.16 < len(wrong) / len(answers) < 0.24
    assert all(text != answers[p] for p, text in wrong.items())
    # A mix of mistakes: some still parse (wrong value), some do not (prose, truncation, gaps).
    valid = [parse_output(task, text)[0] for text in wrong.values()]
    assert 0.1 < sum(valid) / len(valid) < 0.5
    assert teacher_answer("never seen, as JSON", answers, 0.2, 5)[0].startswith("{")
    assert corrupt("plain text", "k", 0) != "plain text"
