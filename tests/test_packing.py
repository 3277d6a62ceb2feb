"""Packed batches on sdpa/eager attention: examples in one row never see each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.specs import StudentSpec
from engine.training.packing import RowPackedCollator
from engine.training.sft import train_sft
from engine.training.student import load_student
from engine.training.varlen import has_varlen_kernel


def test_packed_row_gives_each_example_its_own_logits(tiny_demo: tuple[Path, list[dict[str, str]]]) -> None:
    base, rows = tiny_demo
    model, tok = load_student(base, device="cpu")
    model.eval()
    assert not has_varlen_kernel(model)
    ids = [tok(r["prompt"] + r["completion"])["input_ids"] for r in rows[:3]]
    packed = RowPackedCollator(tok.pad_token_id)(
        [
            {"input_ids": [t for x in ids for t in x], "seq_lengths": [len(x) for x in ids]},
            {"input_ids": ids[0], "seq_lengths": [len(ids[0])]},
        ]
    )
    assert "attention_mask" not in packed
    assert packed["position_ids"][0, len(ids[0])] == 0 and packed["labels"][0, len(ids[0])] == -100
    with torch.no_grad():
        logits = model(**{k: packed[k] for k in ("input_ids", "position_ids")}, use_cache=False).logits
        offset = 0
        for x in ids:
            alone = model(input_ids=torch.tensor([x]), use_cache=False).logits[0]
            torch.testing.assert_close(logits[0, offset : offset + len(x)], alone, atol=1e-4, rtol=1e-4)
            offset += len(x)


@pytest.mark.slow
def test_packed_training_learns(tiny_demo: tuple[Path, list[dict[str, str]]], tmp_path: Path) -> None:
    base, rows = tiny_demo
    model, tok = load_student(base, device="cpu")
    spec = StudentSpec(
        max_steps=20,
        batch_size=4,
        max_length=256,
        logging_steps=5,
        learning_rate=3e-3,
        packing=True,
        save_steps=None,
    )
    result = train_sft(model, tok, rows, spec, tmp_path / "t", seed=0, report_to=[])
    # More than one example per 256-token row, and the loss falls as without packing.
    assert result.tokens_seen > 20 * 4 * 128
    assert result.final_loss < 0.7 * result.first_loss


@pytest.mark.slow
def test_checkpointing_and_accumulation_with_lora(
    tiny_demo: tuple[Path, list[dict[str, str]]], tmp_path: Path
) -> None:
    from engine.specs import LoraSpec

    base, rows = tiny_demo
    model, tok = load_student(base, device="cpu")
    spec = StudentSpec(
        max_steps=6,
        batch_size=4,
        logging_steps=1,
        learning_rate=5e-3,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        lora=LoraSpec(enabled=True, target_modules="all-linear"),
        save_steps=None,
    )
    result = train_sft(model, tok, rows, spec, tmp_path / "t", seed=0, report_to=[])
    # Two micro-batches of 4 per optimizer step: 6 steps see 48 examples' tokens.
    assert result.steps == 6 and result.tokens_seen > 48 * 40
    assert all(v == v for _, v in result.losses)  # finite, not NaN
