"""Our SFT fast path computes what TRL computes: the padding-free attention and the compact loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTTrainer

from engine.specs import LoraSpec, StudentSpec
from engine.training.packing import RowPackedCollator
from engine.training.sft import padding_free_attention, sft_config, train_sft, truncate_tokenized
from engine.training.student import load_student, lora_config
from engine.training.trainer import SenseiSFTTrainer
from engine.training.varlen import (
    VARLEN_ATTENTION,
    plan_groups,
    varlen_attention,
    varlen_probe,
    varlen_unsupported,
)


def flat_row(lengths: list[int], vocab: int, seed: int = 0) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Random examples and the padding-free batch TRL's collator makes of them."""
    gen = torch.Generator().manual_seed(seed)
    examples = [torch.randint(3, vocab, (n,), generator=gen) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    batch = {
        "input_ids": torch.cat(examples)[None],
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max(lengths),
        "max_length_k": max(lengths),
    }
    return examples, batch


def random_model(config_cls: Any, model_cls: Any, kv_heads: int = 4) -> Any:
    """A randomly initialised 2-layer decoder of ``model_cls`` (sdpa attention)."""
    torch.manual_seed(0)
    config = config_cls(
        vocab_size=200,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        attn_implementation="sdpa",
    )
    return model_cls(config)


@pytest.mark.parametrize(
    ("kv_heads", "lengths"),
    [(4, [7, 1, 30, 12]), (2, [7, 1, 30, 12]), (4, [20, 18, 19])],
    ids=["skewed", "skewed-gqa", "balanced"],
)
def test_varlen_attention_gives_each_example_its_own_logits(kv_heads: int, lengths: list[int]) -> None:
    model = random_model(LlamaConfig, LlamaForCausalLM, kv_heads=kv_heads).eval()
    examples, batch = flat_row(lengths, model.config.vocab_size)
    with torch.no_grad():
        alone = [model(input_ids=x[None], use_cache=False).logits[0] for x in examples]
        with varlen_attention(model, max_length=64):
            assert model.config._attn_implementation == VARLEN_ATTENTION
            flat = model(**batch, use_cache=False).logits[0]
        # Without the boundaries, sdpa's block mask is the reference; the last example saw no other.
        masked = model(**{k: batch[k] for k in ("input_ids", "position_ids")}, use_cache=False).logits[0]
    assert model.config._attn_implementation == "sdpa"  # restored for generation
    torch.testing.assert_close(flat, torch.cat(alone), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(flat, masked, atol=1e-5, rtol=1e-4)


def test_skewed_rows_are_attended_in_length_groups() -> None:
    assert plan_groups([20, 18, 19]) == [[0, 1, 2]]  # one sdpa call
    # One long example and short fillers: the fillers must not pay the long length.
    assert plan_groups([480, 8, 8, 8, 8]) == [[1, 2, 3, 4], [0]]
    assert plan_groups([100, 60, 70, 90]) == [[0, 1, 2, 3]]  # grouping would save too little


def test_a_model_that_drops_the_boundaries_is_caught_before_training() -> None:
    from transformers import StableLmConfig, StableLmForCausalLM

    # StableLM's decoder layers call their attention without the extra kwargs.
    model = random_model(StableLmConfig, StableLmForCausalLM)
    assert varlen_unsupported(model, 128) is None  # nothing in its config says so
    assert "do not pass the attention kwargs on" in (varlen_probe(model) or "")
    assert model.training and model.config._attn_implementation == "sdpa"  # restored
    llama = random_model(LlamaConfig, LlamaForCausalLM)
    assert varlen_probe(llama) is None


def test_varlen_attention_refuses_what_it_does_not_compute() -> None:
    def config(**kw: Any) -> Any:
        return type("M", (), {"config": LlamaConfig(**kw)})()

    assert varlen_unsupported(config(), 4096) is None
    assert "soft-caps" in (varlen_unsupported(config(attn_logit_softcapping=50.0), 128) or "")
    window = config(sliding_window=256)
    assert varlen_unsupported(window, 128) is None  # every example fits in the window
    assert "256-token sliding window" in (varlen_unsupported(window, 512) or "")
    assert "64-token chunks" in (varlen_unsupported(config(attention_chunk_size=64), 128) or "")
    with (
        pytest.raises(ValueError, match="soft-caps the logits"),
        varlen_attention(config(attn_logit_softcapping=50.0), 128),
    ):
        pass


def trainers(base: Path, rows: list[dict[str, str]], tmp: Path, spec: StudentSpec) -> tuple[Any, Any]:
    """TRL's trainer and ours on the same model, data and config."""
    model, tok = load_student(base, device="cpu")
    model.train()
    args = sft_config(spec, tmp, seed=0, report_to=[])
    dataset = Dataset.from_list(rows)
    peft = lora_config(spec.lora) if spec.lora.enabled else None
    theirs = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=peft)
    ours = SenseiSFTTrainer(
        model=theirs.model, args=args, train_dataset=dataset, processing_class=tok, peft_config=None
    )
    if spec.packing:  # the fallback layout for models the padding-free attention cannot serve
        theirs.data_collator = ours.data_collator = RowPackedCollator(int(tok.pad_token_id))
    return theirs, ours


def loss_grads_metrics(
    trainer: Any, compute: Any, batch: dict[str, Any]
) -> tuple[float, list[Any], list[float]]:
    trainer.model.zero_grad()
    loss = compute(trainer.model, dict(batch))
    loss.backward()
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    metrics = trainer._metrics["train"]
    return loss.item(), grads, [metrics["entropy"][-1], metrics["mean_token_accuracy"][-1]]


@pytest.mark.parametrize(
    "spec",
    [
        StudentSpec(batch_size=6, save_steps=None),
        StudentSpec(batch_size=6, save_steps=None, padding_free=True),
        StudentSpec(
            batch_size=6,
            save_steps=None,
            lora=LoraSpec(enabled=True, target_modules="all-linear", dropout=0.0),
        ),
        StudentSpec(batch_size=3, save_steps=None, packing=True, max_length=256),
    ],
    ids=["padded", "padding-free", "lora", "row-packed"],
)
def test_compact_loss_equals_trl_loss(
    tiny_demo: tuple[Path, list[dict[str, str]]], tmp_path: Path, spec: StudentSpec
) -> None:
    base, rows = tiny_demo
    theirs, ours = trainers(base, rows, tmp_path, spec)
    batch = next(iter(ours.get_train_dataloader()))
    assert ours._compact_loss_applies(ours.model, batch, return_outputs=False)
    # Compact: only the completion tokens reach the LM head, far fewer than the batch holds.
    assert int((batch["labels"] != -100).sum()) < 0.6 * batch["input_ids"].numel()
    trl_loss, trl_grads, trl_metrics = loss_grads_metrics(theirs, theirs.compute_loss, batch)
    our_loss, our_grads, our_metrics = loss_grads_metrics(ours, ours.compute_loss, batch)
    assert our_loss == pytest.approx(trl_loss, rel=1e-5)
    assert len(our_grads) == len(trl_grads) > 0
    for mine, ref in zip(our_grads, trl_grads, strict=True):
        torch.testing.assert_close(mine, ref, atol=1e-6, rtol=1e-4)
    assert our_metrics == pytest.approx(trl_metrics, rel=1e-4)
    assert ours._total_train_tokens == theirs._total_train_tokens > 0


def test_padding_free_picks_its_attention(
    tiny_demo: tuple[Path, list[dict[str, str]]], tmp_path: Path
) -> None:
    base, rows = tiny_demo
    _, ours = trainers(base, rows, tmp_path, StudentSpec(packing=True, max_length=256, save_steps=None))
    with padding_free_attention(ours, StudentSpec(packing=True, max_length=256), 0):
        assert ours.model.config._attn_implementation == VARLEN_ATTENTION
    assert ours.model.config._attn_implementation == "sdpa"
    # A model with a sliding window shorter than a packed row keeps its rows apart instead.
    ours.model.config.sliding_window = 128
    with padding_free_attention(ours, StudentSpec(packing=True, max_length=256), 0):
        assert ours.model.config._attn_implementation == "sdpa"
    assert isinstance(ours.data_collator, RowPackedCollator)


@pytest.mark.slow
def test_padding_free_training_learns(tiny_demo: tuple[Path, list[dict[str, str]]], tmp_path: Path) -> None:
    base, rows = tiny_demo
    model, tok = load_student(base, device="cpu")
    before = [p.detach().clone() for p in model.parameters()]
    spec = StudentSpec(
        max_steps=20, batch_size=8, logging_steps=5, learning_rate=3e-3, padding_free=True, save_steps=None
    )
    result = train_sft(model, tok, rows, spec, tmp_path / "t", seed=0, report_to=[])
    assert result.final_loss < 0.7 * result.first_loss
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model.config._attn_implementation == "sdpa"


def test_padding_free_rows_are_cut_to_max_length() -> None:
    rows = Dataset.from_list(
        [
            {"input_ids": list(range(10)), "labels": [-100] * 4 + list(range(4, 10))},
            {"input_ids": list(range(10)), "labels": [-100] * 8 + [8, 9]},  # nothing left to learn
            {"input_ids": [1, 2], "labels": [-100, 2]},
        ]
    )
    cut = truncate_tokenized(rows, 6)
    assert cut["input_ids"] == [list(range(6)), [1, 2]]
    assert cut["labels"] == [[-100] * 4 + [4, 5], [-100, 2]]


def test_prompt_learning_keeps_trls_loss(tiny_demo: tuple[Path, list[Any]], tmp_path: Path) -> None:
    from peft import PromptTuningConfig

    base, rows = tiny_demo
    model, tok = load_student(base, device="cpu")
    args = sft_config(StudentSpec(save_steps=None), tmp_path, seed=0, report_to=[])
    peft = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    ours = SenseiSFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft
    )
    batch = next(iter(ours.get_train_dataloader()))
    # Virtual tokens are PeftModel.forward's doing: the compact path would skip them.
    assert not ours._compact_loss_applies(ours.model, batch, return_outputs=False)
    ours.compute_loss(ours.model, batch).backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in ours.model.parameters() if p.requires_grad
    )
