"""Batched greedy generation with a student, for evaluation on the test split.

Greedy decoding makes evaluation deterministic: the same model and prompts always give
the same answers, so two runs differ only because their weights do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 32,
    on_batch: Callable[[int, int], None] | None = None,
    add_special_tokens: bool = True,
    stop_token_ids: list[int] | None = None,
) -> list[str]:
    """Complete each prompt greedily, stopping at EOS; return only the new text, stripped.

    Prompts are batched by length (less padding, faster) and answers returned in input order.

    Args:
        model: A causal LM (or a PEFT model wrapping one).
        tokenizer: Its tokenizer; needs a pad token (``load_student`` guarantees one).
        prompts: The prompts, exactly as used in training.
        max_new_tokens: Upper bound on answer length in tokens.
        batch_size: Prompts generated at once.
        on_batch: Called as ``on_batch(done, total)`` after each batch (progress reports).
        add_special_tokens: Let the tokenizer add its special tokens (BOS); False for text a
            chat template rendered, which already holds them.
        stop_token_ids: Tokens that end an answer besides EOS (a chat template's end of turn,
            see :func:`engine.training.formats.stop_token_ids`).

    Returns:
        One answer per prompt, in the order of ``prompts``.
    """
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=sorted({tokenizer.eos_token_id, *(stop_token_ids or [])} - {None}),
        pad_token_id=pad_id,
    )
    device = next(model.parameters()).device
    # Longest first, so the first batch also tells us early whether memory suffices.
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    answers: list[str] = [""] * len(prompts)
    was_training = model.training
    side = tokenizer.padding_side
    model.eval()
    # Decoder-only models continue from the last position, so padding must go on the left.
    tokenizer.padding_side = "left"
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch_idx = order[start : start + batch_size]
                enc = tokenizer(
                    [prompts[i] for i in batch_idx],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=add_special_tokens,
                )
                enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out = model.generate(**enc, generation_config=config)
                new_tokens = out[:, enc["input_ids"].shape[1] :]
                texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text in zip(batch_idx, texts, strict=True):
                    answers[i] = text.strip()
                if on_batch is not None:
                    on_batch(min(start + batch_size, len(order)), len(order))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers
