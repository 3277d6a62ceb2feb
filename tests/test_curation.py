"""Curation: teacher answers kept or dropped by rules, a judge and SME labels; the train pool
and the DPO pair builder follow those decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.judges.curation import Decision, curate, decide, dpo_rule_fn, reason_key, rule_check
from engine.review import items as review
from engine.scoring.label_functions import RuleError, RuleResult
from engine.scoring.rules import load_rules
from engine.specs import CurationSpec, ExperimentSpec, TaskSpec, demo_spec
from engine.store import Store
from engine.training.job import training_pool
from engine.training.pairs import build_dpo_pairs
from tests.actors import person

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL

TASK = TaskSpec(output_kind="json", json_fields=["a"])
RULES_YAML = "- {kind: keywords_forbidden, name: no-acme, keywords: [Acme]}\n"
ANSWERS = {
    0: '{"a": "ok"}',  # nothing objects
    1: '{"a": "Acme"}',  # a rule rejects
    2: '{"a": "two"}',  # the judge rejects
    3: '{"a": "three"}',  # the judge has no verdict
    4: '{"a": "Acme four"}',  # a rule rejects, but an SME accepts
    5: '{"a": "five"}',  # rules and judge pass, but an SME rejects
    6: '{"a": "six"}',  # the judge's answer could not be parsed
    7: '{"a": "seven"}',
    8: '{"a": "eight"}',
    9: 'Sure! {"a": "nine"}',  # invalid: the valid-output filter drops it first
    10: '{"a": "test"}',  # test split: never curated for training
}
JUDGE = {0: "accept", 1: "accept", 2: "reject", 4: "accept", 5: "accept", 6: "unparsable", 7: "accept"}
JUDGE |= {8: "accept", 9: "accept", 10: "reject"}


def _spec(**curation: object) -> ExperimentSpec:
    return ExperimentSpec(task=TASK, curation=CurationSpec.model_validate(curation))


def _setup(store: Store, spec: ExperimentSpec, labels: bool = True) -> str:
    """Dataset, teacher answers, rules file, the ``strict`` judge's verdicts and SME labels."""
    rows = [
        {"idx": i, "split": "test" if i == 10 else "train", "input": f"x{i}", "prompt": f"p{i}"}
        for i in ANSWERS
    ]
    ds = store.save_dataset("curation", "curation-test", TASK.model_dump(), rows)
    key = spec.teacher_key()
    store.save_teacher_responses(
        ds,
        key,
        [{"idx": i, "request_hash": f"h{i}", "output": o, "valid": int(i != 9)} for i, o in ANSWERS.items()],
    )
    (Path(store.home) / review.RULES_FILE).write_text(RULES_YAML)
    store.save_judge_verdicts(
        "strict", [{"item_ref": review.teacher_ref(ds, key, i), "verdict": v} for i, v in JUDGE.items()]
    )
    if labels:
        store.add_annotation(review.teacher_ref(ds, key, 4), "reject", actor=person("alice"))
        store.add_annotation(
            review.teacher_ref(ds, key, 4), "accept", actor=person("alice")
        )  # changed her mind
        store.add_annotation(
            review.teacher_ref(ds, key, 5), "reject", note="wrong value", actor=person("bob")
        )
    return ds


def test_defaults_keep_every_answer_without_labels(store: Store) -> None:
    spec = _spec()
    assert spec.teacher_key() == _spec(rules=True, judge="strict").teacher_key()
    ds = _setup(store, spec, labels=False)
    result = curate(store, spec, ds)
    assert not result.active
    assert result.kept_indices == list(range(10))  # train split only; validity is not curation's job
    assert result.counts == {"kept": 10, "dropped": 0}


def test_sme_labels_count_by_default(store: Store) -> None:
    spec = _spec()
    ds = _setup(store, spec)
    result = curate(store, spec, ds)
    assert result.active
    assert 5 not in result.kept_indices and 4 in result.kept_indices
    assert result.decisions[5] == Decision(5, False, ["SME: reject (bob)"])


def test_rules_judge_and_sme_override(store: Store) -> None:
    spec = _spec(rules=True, judge="strict")
    ds = _setup(store, spec)
    result = curate(store, spec, ds)
    by_idx = {d.idx: d for d in result.decisions}
    assert result.kept_indices == [0, 4, 7, 8, 9]
    assert by_idx[1].reasons == ["rule 'no-acme': reject: mentions forbidden keyword 'Acme'"]
    assert by_idx[2].reasons == ["judge 'strict': reject"]
    assert by_idx[3].reasons == ["judge 'strict': no verdict"]
    assert by_idx[4].keep and by_idx[4].reasons[0] == "SME: accept (alice)"  # overrides the rule
    assert not by_idx[5].keep and by_idx[5].reasons == ["SME: reject (bob)"]  # overrides an accept
    assert by_idx[6].reasons == ["judge 'strict': unparsable"]
    assert result.counts == {
        "kept": 5,
        "dropped": 5,
        "rule 'no-acme'": 1,
        "judge 'strict'": 3,
        "SME": 1,
    }
    assert "kept 5 of 10" in result.summary()
    assert result.to_json()["decisions"][0] == {"idx": 0, "keep": True, "reasons": []}


def test_judge_missing_keep_and_sme_off(store: Store) -> None:
    spec = _spec(rules=True, judge="strict", judge_missing="keep", sme=False)
    ds = _setup(store, spec)
    assert curate(store, spec, ds).kept_indices == [0, 3, 5, 7, 8, 9]


def test_decide_without_a_store() -> None:
    cfg = CurationSpec(rules=True, judge="j")
    rejected = [RuleResult("r", False, "bad"), RuleResult("ok", True)]
    assert decide(1, cfg, rejected, "accept") == Decision(1, False, ["rule 'r': reject: bad"])
    assert decide(1, CurationSpec(), rejected, None).keep  # rules off, no judge: keep
    sme = {"label": "accept", "annotator": "ann"}
    assert decide(1, cfg, rejected, "reject", sme).keep
    assert not decide(1, cfg, [], "accept", sme | {"label": "reject"}).keep  # overrides an accept
    assert decide(1, cfg.model_copy(update={"sme": False}), [], "accept", sme | {"label": "reject"}).keep
    assert reason_key("rule 'r': reject: bad: worse") == "rule 'r'"


def test_training_pool_keeps_only_curated_answers(store: Store) -> None:
    plain, curated = _spec(sme=False), _spec(rules=True, judge="strict")
    ds = _setup(store, curated)
    full = [r["idx"] for r in training_pool(store, ds, plain)]
    assert sorted(full) == list(range(9))  # 9 is invalid, 10 is test
    pool = [r["idx"] for r in training_pool(store, ds, curated)]
    assert pool == [i for i in full if i in {0, 4, 7, 8}]  # same shuffled order, nested
    assert all(r["completion"] == ANSWERS[r["idx"]] for r in training_pool(store, ds, curated))


def test_broken_rules_file_fails_curation(store: Store) -> None:
    spec = _spec(rules=True)
    ds = _setup(store, spec)
    (Path(store.home) / review.RULES_FILE).write_text("- {kind: no_such_kind, name: x}\n")
    with pytest.raises(RuleError, match=r"curation\.rules"):
        curate(store, spec, ds)
    assert curate(store, _spec(), ds).kept_indices  # rules off: the file is not read


def test_rule_failing_student_answer_becomes_rejected(store: Store) -> None:
    (Path(store.home) / review.RULES_FILE).write_text(
        "- {kind: regex_must_match, name: name-first, pattern: '^\\{\"name\"'}\n"
    )
    task = TaskSpec(output_kind="json", json_fields=["name", "age"])
    good, reordered = '{"name": "Ann", "age": 3}', '{"age": 3, "name": "Ann"}'  # an exact match
    assert build_dpo_pairs(["p"], [good], [reordered], task) == []
    assert dpo_rule_fn(ExperimentSpec(task=task), store.home) is None  # curation.rules off
    rule_fn = dpo_rule_fn(ExperimentSpec(task=task, curation=CurationSpec(rules=True)), store.home)
    assert rule_fn is not None
    assert build_dpo_pairs(["p"], [good], [reordered], task, rule_fn=rule_fn) == [
        {"prompt": "p", "chosen": good, "rejected": reordered}
    ]
    assert not rule_check(load_rules(RULES_YAML))('{"a": "Acme"}')


@pytest.mark.slow
def test_train_job_records_curation(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_train_job import _run_job, _setup

    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = demo_spec("fast").model_copy(update={"curation": CurationSpec(rules=True)})
    spec.student.max_steps, spec.student.logging_steps = 2, 1
    (Path(store.home) / review.RULES_FILE).write_text(
        '- {kind: regex_must_not_match, name: not-high, pattern: \'"urgency": "high"\'}\n'
    )
    exp_id, ds = _setup(store, spec)
    run = _run_job(store, spec, exp_id, size=10_000)
    saved = json.loads((Path(run["run_dir"]) / "curation.json").read_text())
    counts = saved["counts"]
    assert counts["dropped"] == counts["rule 'not-high'"] > 0
    assert run["metrics"]["n_train"] == counts["kept"] == len(training_pool(store, ds, spec))
    (event,) = [e for e in store.list_events(run_id=run["id"]) if e["kind"] == "curation"]
    assert f"kept {counts['kept']} of" in event["message"]
