"""Tiny-student training: the loss falls, weights change, saved models reload identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.demo.task import DEMO_TEMPLATE, generate_examples
from engine.specs import LoraSpec, StudentSpec, TinyModelSpec
from engine.store import Store
from engine.training.generate import generate
from engine.training.sft import StoreCallback, TrainingDiverged, train_sft
from engine.training.student import (
    build_tiny_student,
    ensure_tiny_base,
    is_adapter_dir,
    load_student,
    save_student,
)

pytestmark = pytest.mark.slow
TINY = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [
        {"prompt": DEMO_TEMPLATE.format(input=ex["input"]), "completion": ex["reference"]}
        for ex in generate_examples(200, seed=1)
    ]


@pytest.fixture(scope="module")
def base_dir(rows: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    return build_tiny_student(texts, TINY, tmp_path_factory.mktemp("base"), seed=0)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tokenizer_and_base_are_deterministic(rows: list[dict[str, str]], tmp_path: Path) -> None:
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    a = build_tiny_student(texts, TINY, tmp_path / "a", seed=3)
    b = build_tiny_student(list(reversed(texts)), TINY, tmp_path / "b", seed=3)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ma, tok = load_student(a)
    mb, _ = load_student(b)
    pairs = zip(ma.state_dict().values(), mb.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    ids = tok(rows[0]["prompt"] + rows[0]["completion"] + tok.eos_token)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) < 128  # the demo fits the default max_length


def test_sft_learns_and_reloads(rows: list[dict[str, str]], base_dir: Path, tmp_path: Path) -> None:
    model, tok = load_student(base_dir)
    before = _weights(model)
    spec = StudentSpec(max_steps=60, batch_size=16, logging_steps=10, learning_rate=3e-3)
    store = Store(tmp_path / "ws")
    callback = StoreCallback(store, None, "run-x")
    result = train_sft(
        model, tok, rows[:160], spec, tmp_path / "trainer", seed=0, callbacks=[callback], report_to=[]
    )

    assert result.steps == 60 and result.tokens_seen > 0 and result.tokens_per_s > 0
    assert result.final_loss < 0.5 * result.first_loss
    after = result.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert [p["step"] for p in store.metric_series(["run-x"], "loss")] == [10, 20, 30, 40, 50, 60]

    prompts = [r["prompt"] for r in rows[160:176]]
    answers = generate(result.model, tok, prompts, max_new_tokens=48, batch_size=5)
    # Even 60 steps teach the format: answers are JSON objects that stop at EOS.
    assert sum(a.startswith("{") and a.endswith("}") for a in answers) >= len(answers) // 2
    assert answers == generate(result.model, tok, prompts, max_new_tokens=48, batch_size=16)

    saved = save_student(result.model, tok, tmp_path / "model")
    reloaded, tok2 = load_student(saved)
    assert generate(reloaded, tok2, prompts, max_new_tokens=48, batch_size=5) == answers


def test_lora_adapter_saves_and_reloads(rows: list[dict[str, str]], base_dir: Path, tmp_path: Path) -> None:
    model, tok = load_student(base_dir)
    base_weights = _weights(model)
    spec = StudentSpec(
        max_steps=20,
        batch_size=8,
        logging_steps=5,
        learning_rate=5e-3,
        lora=LoraSpec(enabled=True, r=4, alpha=8, target_modules="all-linear"),
    )
    result = train_sft(model, tok, rows[:64], spec, tmp_path / "trainer", seed=0, report_to=[])
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(v.numel() for v in base_weights.values()) / 2
    assert result.final_loss < result.first_loss

    saved = save_student(result.model, tok, tmp_path / "adapter")
    assert is_adapter_dir(saved) and not (saved / "model.safetensors").exists()
    config = json.loads((saved / "adapter_config.json").read_text())
    assert config["r"] == 4 and Path(config["base_model_name_or_path"]) == base_dir

    prompts = [r["prompt"] for r in rows[180:186]]
    answers = generate(result.model, tok, prompts, max_new_tokens=24)
    reloaded, tok2 = load_student(saved)
    assert generate(reloaded, tok2, prompts, max_new_tokens=24) == answers
    # The base weights on disk are untouched by adapter training.
    fresh, _ = load_student(base_dir)
    assert all(torch.equal(base_weights[k], v) for k, v in fresh.state_dict().items())


def test_nan_loss_stops_training(rows: list[dict[str, str]], base_dir: Path, tmp_path: Path) -> None:
    model, tok = load_student(base_dir)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    store = Store(tmp_path / "ws")
    callback = StoreCallback(store, None, "run-nan")
    spec = StudentSpec(max_steps=10, batch_size=4, logging_steps=1)
    with pytest.raises(TrainingDiverged, match="became nan at step 1"):
        train_sft(model, tok, rows[:16], spec, tmp_path / "t", seed=0, callbacks=[callback], report_to=[])
    assert [e["kind"] for e in store.list_events(run_id="run-nan")] == ["diverged"]


def test_ensure_tiny_base_builds_once(rows: list[dict[str, str]], tmp_path: Path) -> None:
    store = Store(tmp_path / "ws")
    texts = [r["prompt"] for r in rows[:50]]
    path = ensure_tiny_base(store, "exp-1", texts, TINY, seed=0)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_base(store, "exp-1", ["other text"], TINY, seed=1) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".base_model-")]
