"""The small judge: label merging, split, a tiny-encoder round trip, the job, and the acceptance run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from engine.context import JobContext
from engine.data.prompts import render_prompt
from engine.data.roots import PathNotAllowed
from engine.demo.simulated_teacher import corrupt
from engine.demo.task import DEMO_TEMPLATE, generate_examples
from engine.jobs import REGISTRY, _resolve
from engine.judges.judge import JudgeItem, Verdict
from engine.judges.small.data import judge_text, merge_items, stratified_split
from engine.judges.small.job import SmallJudgeJobSpec
from engine.judges.small.model import (
    BUNDLED_ENCODER,
    SmallJudge,
    SmallJudgeSpec,
    resolve_encoder,
    train_small_judge,
)
from engine.specs import SpecError
from engine.store import Store


def demo_items(
    n: int, seed: int = 0, reject_rate: float = 0.35, noise: float = 0.05, sme_rate: float = 0.15
) -> list[dict[str, Any]]:
    """Demo-task answers judged by a noisy "big judge", some also labelled by an SME.

    Rejected answers are the demo teacher's real mistakes (a wrong value in valid JSON, prose
    around the JSON, a missing field, JSON cut off), so some are easy to spot and some need
    reading the message. The judge's label is flipped with probability ``noise``; the SME's
    label is always right.
    """
    rng = random.Random(seed)
    items = []
    for i, ex in enumerate(generate_examples(n, seed)):
        prompt = render_prompt(DEMO_TEMPLATE, ex["input"])
        bad = rng.random() < reject_rate
        text = judge_text(prompt, corrupt(ex["reference"], prompt, seed) if bad else ex["reference"])
        truth = "reject" if bad else "accept"
        judged = ("accept" if bad else "reject") if rng.random() < noise else truth
        items.append({"id": f"a{i}", "text": text, "label": judged, "source": "judge", "cost_usd": 4e-4})
        if rng.random() < sme_rate:
            items.append({"id": f"a{i}", "text": text, "label": truth, "source": "sme"})
    return items


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: the "any HF encoder" path, in seconds."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(BUNDLED_ENCODER))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_spec(encoder: Path, **kw: Any) -> SmallJudgeSpec:
    settings: dict[str, Any] = {"max_length": 64, "epochs": 2, "lr": 1e-3, "batch_size": 16, **kw}
    return SmallJudgeSpec(encoder=str(encoder), **settings)


def test_sme_label_overrides_judge_label() -> None:
    items: list[dict[str, Any]] = [
        {"id": "x", "text": "t1", "label": "accept", "source": "judge", "cost_usd": 0.01},
        {"id": "x", "text": "t1", "label": "reject", "source": "sme"},
        {"text": "t2", "label": "reject"},  # source defaults to judge, key to the text
        {"text": "t2", "label": "reject", "source": "sme"},
    ]
    answers, overrides = merge_items(items)
    assert [(a.key, a.label, a.judge, a.sme) for a in answers] == [
        ("x", "reject", "accept", "reject"),
        ("t2", "reject", "reject", "reject"),
    ]
    assert overrides == 1 and answers[0].judge_cost_usd == 0.01


@pytest.mark.parametrize(
    "bad",
    [
        {"text": "t", "label": "unparsable"},
        {"text": "", "label": "accept"},
        {"text": "t", "label": "accept", "source": "x"},
    ],
)
def test_bad_items_are_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="item 0"):
        merge_items([bad])


def test_split_is_stratified_and_seeded() -> None:
    answers, _ = merge_items(demo_items(300, sme_rate=0))
    train, test = stratified_split(answers, 0.2, seed=1)
    assert len(train) + len(test) == 300 and not {a.key for a in train} & {a.key for a in test}
    share = [sum(a.label == "reject" for a in part) / len(part) for part in (train, test)]
    assert abs(share[0] - share[1]) < 0.02
    assert [a.key for a in stratified_split(answers, 0.2, seed=1)[1]] == [a.key for a in test]
    with pytest.raises(ValueError, match="at least 2"):
        stratified_split(answers[:1], 0.5, 0)


def test_specs_forbid_unknown_keys_and_need_one_item_source() -> None:
    with pytest.raises(pydantic.ValidationError):
        SmallJudgeSpec.model_validate({"epoch": 2})
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        SmallJudgeJobSpec.model_validate({"items_path": "a.jsonl", "items": []})
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        SmallJudgeJobSpec.model_validate({})


def test_job_with_a_bad_spec_names_the_field(store: Store) -> None:
    ctx = JobContext(store=store, job={"id": "j"}, spec={"items": [], "small_judge": {"epoch": 1}})
    with pytest.raises(SpecError, match="epoch"):
        _resolve("small_judge")(ctx)


def test_bundled_encoder_resolves_to_a_local_folder() -> None:
    assert (Path(resolve_encoder(BUNDLED_ENCODER)) / "config.json").is_file()
    assert resolve_encoder("org/some-encoder") == "org/some-encoder"


def test_tiny_judge_trains_saves_and_reloads_identically(tiny_encoder: Path, tmp_path: Path) -> None:
    items = demo_items(240, seed=3)
    seen: list[float] = []
    report = train_small_judge(
        items, _tiny_spec(tiny_encoder), tmp_path / "judge", lambda f, _m: seen.append(f)
    )
    assert seen and seen[-1] == pytest.approx(1.0)
    assert report["train_loss"]["last"] < report["train_loss"]["first"]
    assert report["n_holdout"] + report["n_train"] == report["n_answers"] == 240
    assert report["vs_big_judge"]["n"] == report["n_holdout"]
    assert report["vs_sme"] is not None and report["big_vs_small_on_sme"] is not None
    assert report["cost"]["big_judge_cost_source"] == "measured"
    assert report["cost"]["big_judge_usd_per_1000"] == pytest.approx(0.4)
    out = tmp_path / "judge"
    assert json.loads((out / "report.json").read_text())["accuracy"] == report["accuracy"]
    # The encoder was fine-tuned (not only the new head) and the embeddings stayed frozen.
    before, after = (
        load_file(tiny_encoder / "model.safetensors"),
        load_file(out / "model" / "model.safetensors"),
    )
    layer = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(before[layer], after[f"bert.{layer}"])
    emb = "embeddings.word_embeddings.weight"
    assert torch.equal(before[emb], after[f"bert.{emb}"])

    rows = [json.loads(line) for line in (out / "holdout.jsonl").read_text().splitlines()]
    texts = {it["id"]: it["text"] for it in items}
    held = [texts[r["key"]] for r in rows]
    loaded = SmallJudge.load(out)
    assert loaded.predict_proba(held) == pytest.approx([r["p_accept"] for r in rows], abs=1e-6)
    again = SmallJudge.load(out).predict(held)
    assert [v.verdict for v in again] == [v.verdict for v in loaded.predict(held)]
    assert all(isinstance(v, Verdict) and v.parsed and v.cost_usd >= 0 for v in again)
    prompt = render_prompt(DEMO_TEMPLATE, "Where is my phone? Order A00001.")
    (one,) = loaded.judge_pointwise([JudgeItem(prompt, '{"intent": "shipping"}')])
    assert one.verdict in ("accept", "reject") and "P(accept)=" in one.reason


def test_small_judge_job(tiny_encoder: Path, store: Store) -> None:
    assert _resolve("small_judge").__name__ == "main" and "small_judge" in REGISTRY
    path = store.home / "judges" / "input" / "items.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(it) + "\n" for it in demo_items(120, seed=5)))
    job_id = store.enqueue("small_judge", {})
    spec = {
        "items_path": str(path),
        "small_judge": _tiny_spec(tiny_encoder, epochs=1, big_judge_usd_per_1000=2.5).model_dump(),
    }
    ctx = JobContext(store=store, job=store.get_job(job_id) or {}, spec=spec)
    _resolve("small_judge")(ctx)
    out = store.home / "judges" / job_id
    report = json.loads((out / "report.json").read_text())
    assert report["cost"]["big_judge_cost_source"] == "configured"
    assert report["cost"]["big_over_small"] > 1
    assert store.get_job(job_id)["progress"] == pytest.approx(1.0)  # type: ignore[index]
    assert SmallJudgeSpec.model_validate_json((out / "spec.json").read_text()).epochs == 1


@pytest.mark.parametrize("field", ["items_path", "out_dir"])
def test_a_crafted_small_judge_job_reads_and_writes_only_under_judges(
    field: str, tiny_encoder: Path, store: Store, tmp_path: Path
) -> None:
    """A job row is no way to read a server file or to write outside the workspace's judges/."""
    inside = store.home / "judges" / "input" / "items.jsonl"
    inside.parent.mkdir(parents=True)
    inside.write_text("".join(json.dumps(it) + "\n" for it in demo_items(40, seed=5)))
    secret = tmp_path / "secret.jsonl"
    secret.write_text(inside.read_text())
    outside = {
        "items_path": [str(secret), str(tmp_path / "absent.jsonl"), "judges/../../x.jsonl"],
        "out_dir": [str(tmp_path / "out"), "judges/../../out"],
    }[field]
    messages = set()
    for bad in outside:
        spec = {"items_path": str(inside), field: bad, "small_judge": _tiny_spec(tiny_encoder).model_dump()}
        job_id = store.enqueue("small_judge", {})
        ctx = JobContext(store=store, job=store.get_job(job_id) or {}, spec=spec)
        with pytest.raises(PathNotAllowed, match=f"{field} .* is not under the workspace's judges/") as err:
            _resolve("small_judge")(ctx)
        messages.add(str(err.value).replace(repr(bad), "PATH"))
    assert len(messages) == 1  # the same words whether the file exists or not
    assert not (tmp_path / "out").exists() and not (store.home.parent / "out").exists()


@pytest.mark.slow
def test_acceptance_minilm_on_1000_items_beats_majority(tmp_path: Path) -> None:
    """Issue 5's acceptance: 1,000 items on a CPU, better than the majority class.

    How long it takes (issue 5 asked for under 3 minutes) is measured by
    ``bench/small_judge_time.py``, not asserted here: a busy machine would fail a timed test.
    """
    items = demo_items(1000, seed=0)
    spec = SmallJudgeSpec()  # the defaults: MiniLM, 64 tokens, 1 epoch
    report = train_small_judge(items, spec, tmp_path / "judge")
    print(
        json.dumps(
            {k: report[k] for k in ("accuracy", "majority_baseline_accuracy", "train_seconds", "threads")}
        )
    )
    print(json.dumps({"vs_big_judge": report["vs_big_judge"], "cost": report["cost"]}))
    print("vs_sme agreement", report["vs_sme"]["agreement"], "kappa", report["vs_sme"]["kappa"])
    assert report["accuracy"] >= report["majority_baseline_accuracy"] + 0.10
    assert report["vs_big_judge"]["kappa"] > 0.5
    assert report["cost"]["big_over_small"] > 10
