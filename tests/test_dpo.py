"""DPO distillation: the pair builder, and a DPO stage that widens the chosen/rejected margin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.demo.task import DEMO_TEMPLATE, generate_examples
from engine.specs import DpoSpec, StudentSpec, TaskSpec, TinyModelSpec, demo_spec
from engine.store import Store
from engine.training.dpo import train_dpo
from engine.training.pairs import build_dpo_pairs, student_fails
from engine.training.sft import StoreCallback
from engine.training.student import build_tiny_student, load_student

JSON_TASK = TaskSpec(output_kind="json", json_fields=["name", "age"])
GOOD = '{"name": "Ann", "age": 3}'


def test_only_failing_student_answers_become_pairs() -> None:
    prompts = ["p0", "p1", "p2", "p3", "p4"]
    chosen = [GOOD, GOOD, GOOD, "Sure! " + GOOD, None]
    student = [
        '{"age": 3, "name": "Ann"}',  # right (key order does not matter): no pair
        '{"name": "Bob", "age": 3}',  # wrong value: pair
        "not json",  # invalid: pair
        '{"name": "Bob", "age": 3}',  # teacher answer failed curation: never chosen
        "x",  # no teacher answer at all
    ]
    pairs = build_dpo_pairs(prompts, chosen, student, JSON_TASK)
    assert [p["prompt"] for p in pairs] == ["p1", "p2"]
    assert all(p["chosen"] == GOOD for p in pairs)
    assert pairs[1]["rejected"] == "not json"


def test_identical_answers_and_rules() -> None:
    text = TaskSpec(output_kind="text")
    assert build_dpo_pairs(["p"], ["hello  world"], [" hello world "], text) == []
    assert not student_fails(text, "ok answer", "ok answer")

    def no_shouting(answer: str) -> bool:
        return not answer.isupper()

    # A rule can reject an otherwise exact student answer and veto a teacher answer.
    assert student_fails(text, "HI", "HI", no_shouting)
    assert build_dpo_pairs(["p"], ["HI"], ["hi there"], text, rule_fn=no_shouting) == []
    assert build_dpo_pairs(["p"], ["hi"], ["bye"], text, rule_fn=no_shouting) == [
        {"prompt": "p", "chosen": "hi", "rejected": "bye"}
    ]
    with pytest.raises(ValueError, match="one to one"):
        build_dpo_pairs(["p"], [], [], text)


@pytest.mark.slow
def test_dpo_widens_the_margin(tmp_path: Path) -> None:
    examples = generate_examples(48, seed=2)
    rows = [
        {"prompt": DEMO_TEMPLATE.format(input=ex["input"]), "reference": ex["reference"]} for ex in examples
    ]
    texts = [r["prompt"] for r in rows] + [r["reference"] for r in rows]
    tiny = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)
    model, tok = load_student(build_tiny_student(texts, tiny, tmp_path / "base", seed=0))
    # Rejected answers: the reference with its values scrambled (what a weak student says).
    pairs = []
    for r in rows:
        obj = json.loads(r["reference"])
        wrong = json.dumps({k: "unknown" for k in obj})
        pairs.append({"prompt": r["prompt"], "chosen": r["reference"], "rejected": wrong})
    spec = StudentSpec(
        logging_steps=2, dpo=DpoSpec(enabled=True, max_steps=12, batch_size=8, learning_rate=1e-3)
    )
    store = Store(tmp_path / "ws")
    callback = StoreCallback(
        store, None, "run-d", keys=("loss", "rewards/margins"), prefix="dpo/", step_offset=100
    )
    result = train_dpo(model, tok, pairs, spec, tmp_path / "dpo", seed=0, callbacks=[callback])

    assert result.steps == 12
    first, last = result.margins[0][1], result.margins[-1][1]
    print(f"DPO margin {first:.4f} -> {last:.4f}")
    assert last > first and last > 0
    points = store.metric_series(["run-d"], "dpo/rewards/margins")
    assert [p["step"] for p in points] == [102, 104, 106, 108, 110, 112]
    assert store.metric_series(["run-d"], "dpo/loss")


@pytest.mark.slow
def test_train_job_runs_dpo_after_sft(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_resume import _add_train_job, _run_in_process
    from tests.test_train_job import _setup

    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = demo_spec("fast")
    spec.data.test_size = 10
    spec.student.tiny = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)
    spec.student.max_steps = 10  # a half-trained student: plenty of failing answers
    spec.student.max_new_tokens = 24
    spec.student.dpo = DpoSpec(enabled=True, max_steps=8, batch_size=8, learning_rate=1e-3, max_pairs=32)
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 32, 0)
    _run_in_process(store, job_id)

    run = store.get_run(run_id)
    assert run is not None and "exact_match" in run["metrics"]
    kinds = [e["kind"] for e in store.list_events(run_id=run_id)]
    assert "dpo_pairs" in kinds and "dpo_done" in kinds
    margins = store.metric_series([run_id], "dpo/rewards/margins")
    assert margins and all(p["step"] > spec.student.max_steps for p in margins)
    print("DPO margins:", [round(p["value"], 4) for p in margins])
    assert margins[-1]["value"] > margins[0]["value"]
    assert sorted(p.name for p in Path(run["run_dir"]).iterdir()) == ["metadata.json", "model", "spec.json"]


@pytest.mark.slow
def test_train_job_runs_dpo_alone(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_resume import _add_train_job, _run_in_process
    from tests.test_train_job import _setup

    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = demo_spec("fast")
    spec.data.test_size = 10
    spec.student.tiny = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)
    spec.student.max_new_tokens = 24
    spec.student.dpo = DpoSpec(
        enabled=True, after_sft=False, max_steps=8, batch_size=8, learning_rate=1e-3, max_pairs=32
    )
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 32, 0)
    _run_in_process(store, job_id)

    run = store.get_run(run_id)
    assert run is not None and "exact_match" in run["metrics"] and "train_loss" not in run["metrics"]
    kinds = [e["kind"] for e in store.list_events(run_id=run_id)]
    assert "sft_skipped" in kinds and "dpo_done" in kinds
    assert store.metric_series([run_id], "loss") == []  # no SFT stage
    margins = store.metric_series([run_id], "dpo/rewards/margins")
    assert margins and margins[-1]["value"] > margins[0]["value"]
