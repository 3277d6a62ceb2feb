"""Loading the student: a Hub id, a local folder, or a tiny Llama built from the task's own text.

Every student, including the tiny one, goes through the same ``from_pretrained`` path: the
tiny base is built once per experiment, saved like any checkpoint, and loaded back from
disk. All runs of an experiment therefore start from the same weights and tokenizer, so an
ablation compares data sizes, not initialisations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

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

from engine.specs import LoraSpec, StudentSpec, TinyModelSpec
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


def build_tiny_student(
    texts: list[str],
    spec: TinyModelSpec,
    out_dir: Path,
    seed: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Build a tiny Llama and its tokenizer from ``texts`` and save both to ``out_dir``.

    Args:
        texts: Task text (prompts and answers) the tokenizer is trained on.
        spec: Architecture (width, depth, heads, vocabulary size).
        out_dir: Destination folder (created); loadable with :func:`load_student`.
        seed: Seed for the initial weights.
        tokenizer: Use this tokenizer instead of training one (``texts`` and
            ``spec.vocab_size`` are then unused): a student that distils token by token from a
            teacher must share the teacher's.

    Returns:
        ``out_dir``.
    """
    if tokenizer is None:
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


def ensure_tiny_base(
    store: Store,
    experiment_id: str,
    texts: list[str],
    spec: TinyModelSpec,
    seed: int,
    tokenizer: PreTrainedTokenizerBase | None = None,
    name: str = "base_model",
) -> Path:
    """The experiment's tiny base model, built on first use and shared by all its runs.

    Concurrent train jobs of one experiment serialise on a file lock; the model is built in
    a temporary folder and renamed into place, so a reader never sees a half-written base.
    ``tokenizer`` and ``name`` as for :func:`build_tiny_student` (an experiment that varies
    the tiny architecture keeps one base per architecture, each under its own name).

    Returns:
        ``<workspace>/experiments/<experiment_id>/<name>``.
    """
    from engine.store.artifacts import artifacts, base_lock, into_place, pull_tiny_base

    arts = artifacts(store)
    final = pull_tiny_base(store, experiment_id, name)  # built by a job on another machine?
    with base_lock(final):
        if not (final / "config.json").exists():
            into_place(final, lambda tmp: build_tiny_student(texts, spec, tmp, seed, tokenizer))
            arts.push(final, last=("config.json",))
        elif arts.remote and not arts.exists_remotely(final / "config.json"):
            arts.push(final, last=("config.json",))  # built here earlier; its upload failed then
    return final


Precision = Literal["fp32", "bf16", "fp16"]


class QuantizationUnavailable(RuntimeError):
    """Quantized (QLoRA) loading was asked for on a machine without a CUDA GPU."""


def resolve_precision(spec_precision: str, cuda_available: bool, bf16_supported: bool) -> Precision:
    """The training precision for ``StudentSpec.precision`` on this device.

    ``auto`` picks bf16 where the GPU supports it (same range as fp32, no loss scaling),
    fp16 on older GPUs, and fp32 on the CPU, where bf16 is emulated and slower.

    Args:
        spec_precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        cuda_available: Whether training runs on a CUDA GPU.
        bf16_supported: Whether that GPU supports bf16.

    Raises:
        ValueError: An explicit precision the device cannot run.
    """
    if spec_precision == "auto":
        if not cuda_available:
            return "fp32"
        return "bf16" if bf16_supported else "fp16"
    if spec_precision == "fp16" and not cuda_available:
        raise ValueError("student.precision=fp16 needs a CUDA GPU; use auto or fp32 on the CPU")
    if spec_precision == "bf16" and cuda_available and not bf16_supported:
        raise ValueError("student.precision=bf16: this GPU has no bf16 support; use auto or fp16")
    if spec_precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"student.precision={spec_precision!r}: expected auto, fp32, bf16 or fp16")
    return spec_precision  # type: ignore[return-value]


def device_precision(spec: StudentSpec) -> Precision:
    """:func:`resolve_precision` for ``spec`` on this machine (``gpus=0`` means the CPU)."""
    cuda = torch.cuda.is_available() and spec.gpus > 0
    return resolve_precision(spec.precision, cuda, cuda and torch.cuda.is_bf16_supported())


def require_quantization_support(quantization: str) -> None:
    """Fail fast, before any weights load, when quantization cannot run here.

    Raises:
        QuantizationUnavailable: ``quantization`` is not ``none`` and there is no CUDA GPU
            (bitsandbytes' 4-bit and 8-bit kernels are CUDA-only).
    """
    if quantization != "none" and not torch.cuda.is_available():
        raise QuantizationUnavailable(
            f"student.quantization={quantization} needs a CUDA GPU; this machine has none — "
            "set student.quantization: none or run on a GPU machine"
        )


def quantization_config(quantization: str, compute_dtype: torch.dtype | None = None) -> Any:
    """A ``BitsAndBytesConfig`` for ``4bit`` (NF4, double quantization) or ``8bit`` loading.

    Args:
        quantization: ``4bit`` or ``8bit``.
        compute_dtype: Matmul dtype of the 4-bit layers (default: bf16 where supported, else fp16).
    """
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization != "4bit":
        raise ValueError(f"quantization={quantization!r}: expected 4bit or 8bit")
    if compute_dtype is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        compute_dtype = torch.bfloat16 if bf16 else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
    )


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a local folder holding a PEFT adapter rather than a full model."""
    return (Path(path) / "adapter_config.json").is_file()


def load_student(
    model_ref: str | Path,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    quantization: str = "none",
    gradient_checkpointing: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a Hub id, a local folder, or a saved adapter.

    Args:
        model_ref: Hub id (``Qwen/Qwen2.5-0.5B``), a local model folder, or a folder with a
            PEFT adapter (its base is loaded from ``base_model_name_or_path``).
        revision: Hub revision (branch, tag or commit); ignored for local folders.
        device: Where to put the model (default: CUDA when available, else CPU).
        dtype: Weight dtype (default float32: training keeps full-precision master weights).
        quantization: ``none``, or ``4bit``/``8bit`` to load the base with bitsandbytes and
            prepare it for adapter training (QLoRA); needs CUDA.
        gradient_checkpointing: With quantization, whether PEFT's preparation turns
            activation checkpointing on.

    Returns:
        ``(model, tokenizer)``; the tokenizer always has a pad token.

    Raises:
        QuantizationUnavailable: Quantization asked for without a CUDA GPU (checked before
            anything is loaded).
    """
    require_quantization_support(quantization)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or torch.float32
    ref = str(model_ref)
    if is_adapter_dir(ref):
        from peft import PeftModel

        adapter_cfg = json.loads((Path(ref) / "adapter_config.json").read_text())
        base, _ = load_student(
            adapter_cfg["base_model_name_or_path"],
            adapter_cfg.get("revision"),
            device,
            dtype,
            quantization,
            gradient_checkpointing,
        )
        model: Any = PeftModel.from_pretrained(base, ref)
        tokenizer = AutoTokenizer.from_pretrained(ref)
    else:
        local = Path(ref).exists()
        kwargs: dict[str, Any] = {} if local else {"revision": revision}
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        if quantization != "none":
            from peft import prepare_model_for_kbit_training

            # Quantized weights are placed by bitsandbytes at load time and cannot be moved.
            model = AutoModelForCausalLM.from_pretrained(
                ref,
                quantization_config=quantization_config(quantization),
                device_map={"": torch.cuda.current_device()},
                **kwargs,
            )
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        else:
            model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **kwargs)
    if tokenizer.pad_token is None:
        # Many base models ship without one; padding with EOS is the usual, safe choice
        # because padded positions are masked out of both attention and loss.
        tokenizer.pad_token = tokenizer.eos_token
    if quantization == "none":
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


def causal_lm(model: Any) -> Any:
    """The ``...ForCausalLM`` inside a model as a trainer holds it (a ``PeftModel``'s base)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


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
