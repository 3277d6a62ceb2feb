"""Loading the student: a Hub id, a local folder, or a tiny Llama built from the task's own text.

Every student, including the tiny one, goes through the same ``from_pretrained`` path: the
tiny base is built once per experiment, saved like any checkpoint, and loaded back from
disk. All runs of an experiment therefore start from the same weights and tokenizer, so an
ablation compares data sizes, not initialisations.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from engine.specs import LoraSpec, TinyModelSpec
from engine.store import Store

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# RoPE has no position table, so a generous limit costs nothing and never truncates a demo.
TINY_MAX_POSITIONS = 2048
# SwiGLU MLP width relative to the hidden size; 2x keeps the tiny model fast on 2 CPU cores.
TINY_MLP_RATIO = 2


def build_tiny_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` (deterministic for the same input).

    Byte-level means any string, even one with characters never seen in training, encodes
    without an unknown token. Every encoding starts with ``<s>``; ``</s>`` ends an answer and
    is appended to training completions, so generation learns to stop there.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted, de-duplicated input: the merges must not depend on the order texts arrive in.
    tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=TINY_MAX_POSITIONS,
        padding_side="right",
    )


def build_tiny_student(texts: list[str], spec: TinyModelSpec, out_dir: Path, seed: int) -> Path:
    """Build a tiny Llama and its tokenizer from ``texts`` and save both to ``out_dir``.

    Args:
        texts: Task text (prompts and answers) the tokenizer is trained on.
        spec: Architecture (width, depth, heads, vocabulary size).
        out_dir: Destination folder (created); loadable with :func:`load_student`.
        seed: Seed for the initial weights.

    Returns:
        ``out_dir``.
    """
    if not texts:
        raise ValueError("build_tiny_student: no text to train the tokenizer on")
    tokenizer = build_tiny_tokenizer(texts, spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=TINY_MLP_RATIO * spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=TINY_MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes (released when the file closes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_tiny_base(
    store: Store, experiment_id: str, texts: list[str], spec: TinyModelSpec, seed: int
) -> Path:
    """The experiment's tiny base model, built on first use and shared by all its runs.

    Concurrent train jobs of one experiment serialise on a file lock; the model is built in
    a temporary folder and renamed into place, so a reader never sees a half-written base.

    Returns:
        ``<workspace>/experiments/<experiment_id>/base_model``.
    """
    exp_dir = store.experiments_dir / experiment_id
    final = exp_dir / "base_model"
    with _file_lock(exp_dir / "base_model.lock"):
        if (final / "config.json").exists():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=".base_model-", dir=exp_dir))
        try:
            build_tiny_student(texts, spec, tmp, seed)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a local folder holding a PEFT adapter rather than a full model."""
    return (Path(path) / "adapter_config.json").is_file()


def load_student(
    model_ref: str | Path,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a Hub id, a local folder, or a saved adapter.

    Args:
        model_ref: Hub id (``Qwen/Qwen2.5-0.5B``), a local model folder, or a folder with a
            PEFT adapter (its base is loaded from ``base_model_name_or_path``).
        revision: Hub revision (branch, tag or commit); ignored for local folders.
        device: Where to put the model (default: CUDA when available, else CPU).
        dtype: Weight dtype (default float32: training keeps full-precision master weights).

    Returns:
        ``(model, tokenizer)``; the tokenizer always has a pad token.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float32
    ref = str(model_ref)
    if is_adapter_dir(ref):
        from peft import PeftModel

        adapter_cfg = json.loads((Path(ref) / "adapter_config.json").read_text())
        base, _ = load_student(
            adapter_cfg["base_model_name_or_path"], adapter_cfg.get("revision"), device, dtype
        )
        model: Any = PeftModel.from_pretrained(base, ref)
        tokenizer = AutoTokenizer.from_pretrained(ref)
    else:
        local = Path(ref).exists()
        kwargs: dict[str, Any] = {} if local else {"revision": revision}
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **kwargs)
    if tokenizer.pad_token is None:
        # Many base models ship without one; padding with EOS is the usual, safe choice
        # because padded positions are masked out of both attention and loss.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return model, tokenizer


def lora_config(spec: LoraSpec) -> Any:
    """A PEFT ``LoraConfig`` for causal-LM training from a :class:`LoraSpec`."""
    from peft import LoraConfig

    targets = spec.target_modules
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
        bias="none",
    )


def save_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """Save a trained model (or only its adapter, for a PEFT model) and tokenizer to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def num_parameters(model: PreTrainedModel, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters, counting tied weights once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
