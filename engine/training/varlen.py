"""Padding-free attention without flash-attention: one causal sdpa call over the examples.

A padding-free batch is one flattened row of real tokens (TRL's collator), with the example
boundaries in ``cu_seq_lens_q``. Flash-attention's variable-length kernels attend within each
example directly. With sdpa or eager attention (every CPU run, and GPUs without the
flash-attn package) transformers instead builds a block-diagonal mask over the whole row:
for 16 examples of 80 tokens that is one 1,280 x 1,280 masked attention, 16 times the work.

:func:`varlen_sdpa_attention` keeps the row flat for everything but attention: the
projections, MLPs, norms and the loss see only real tokens. For attention alone it scatters
the examples into a ``(examples, heads, longest, head_dim)`` tensor, right-padded, and makes
one ``is_causal`` sdpa call: a causal query never looks right, so it never sees the padding,
and no mask is needed. Then it gathers the real positions back.

It is registered with transformers' ``AttentionInterface`` under :data:`VARLEN_ATTENTION`
and switched on only while training (:func:`varlen_attention`): transformers builds no mask
for a custom implementation, so generation with padded prompts must run on plain sdpa.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

VARLEN_ATTENTION = "sensei_varlen_sdpa"
# Attention implementations that already attend within each example of a flattened row.
VARLEN_KERNELS = (
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
    "kernels-community/flash-attn",
)


def has_varlen_kernel(model: Any) -> bool:
    """True when the model's attention handles flattened padding-free batches by itself."""
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    return any(impl.startswith(name) for name in VARLEN_KERNELS)


def varlen_unsupported(model: Any, max_length: int | None) -> str | None:
    """Why :func:`varlen_sdpa_attention` cannot stand in for this model's attention, or ``None``.

    It computes plain causal softmax attention; models whose layers add logit soft-capping or
    attention sinks, or a sliding window shorter than an example can be, keep transformers'
    own (masked) path.

    Args:
        model: The model (or its config holder).
        max_length: The longest example (``None``: unbounded).
    """
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "attn_logit_softcapping", None) is not None:
        return "its attention soft-caps the logits"
    window = getattr(text, "sliding_window", None)
    if window and (max_length is None or max_length > window):
        # Within the window a sliding layer attends to every earlier token, like a full one.
        return f"it has a {window}-token sliding window and examples may be longer"
    if getattr(text, "model_type", "") in {"gpt_oss"}:
        return "its attention has sinks"
    if getattr(text, "is_encoder_decoder", False):
        return "it is an encoder-decoder model"
    return None


def _segment_index(cu_seq_lens: torch.Tensor, total: int, longest: int) -> tuple[int, torch.Tensor]:
    """``(examples, index)``: token ``t`` of the flat row goes to slot ``index[t]`` of a padded
    ``(examples * longest)`` layout (example ``i`` at row ``i``, from column 0)."""
    cu = cu_seq_lens.to(torch.long)
    lengths = cu[1:] - cu[:-1]
    examples = lengths.numel()
    example_of = torch.repeat_interleave(torch.arange(examples, device=cu.device), lengths, output_size=total)
    position = torch.arange(total, device=cu.device) - cu[:-1][example_of]
    return examples, example_of * longest + position


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each example of a flattened row (see the module docstring).

    Args:
        module: The attention layer (for ``num_key_value_groups``).
        query: ``(1, heads, tokens, head_dim)``.
        key: ``(1, kv_heads, tokens, head_dim)``.
        value: Like ``key``.
        attention_mask: Must be ``None``: the example boundaries come from ``cu_seq_lens_q``.
        dropout: Attention dropout probability.
        scaling: Softmax scale (default ``head_dim ** -0.5``).
        **kwargs: ``cu_seq_lens_q`` (example starts, then the total) and ``max_length_q``;
            without them the row is one example.

    Returns:
        ``(output, None)`` with ``output`` of shape ``(1, tokens, heads, head_dim)``.
    """
    for feature in ("softcap", "s_aux"):
        if kwargs.get(feature) is not None:
            raise ValueError(f"{VARLEN_ATTENTION} does not implement {feature}; see varlen_unsupported()")
    groups = int(getattr(module, "num_key_value_groups", 1))
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    cu = kwargs.get("cu_seq_lens_q")
    if attention_mask is not None or query.shape[0] != 1 or cu is None or cu.numel() <= 2:
        # A padded batch (or a single example): nothing to regroup.
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=dropout,
            scale=scaling,
            is_causal=attention_mask is None and query.shape[2] > 1,
        )
        return out.transpose(1, 2).contiguous(), None

    _, heads, total, dim = query.shape
    longest = int(kwargs.get("max_length_q") or (cu[1:] - cu[:-1]).max())
    window = kwargs.get("sliding_window")
    if window is not None and longest > window:
        raise ValueError(
            f"{VARLEN_ATTENTION}: an example of {longest} tokens exceeds the {window}-token sliding window"
        )
    examples, index = _segment_index(cu, total, longest)

    def padded(x: torch.Tensor) -> torch.Tensor:
        slots = x.new_zeros(examples * longest, x.shape[1], dim)
        slots[index] = x[0].transpose(0, 1)
        return slots.view(examples, longest, x.shape[1], dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        padded(query), padded(key), padded(value), dropout_p=dropout, scale=scaling, is_causal=True
    )
    out = out.transpose(1, 2).reshape(examples * longest, heads, dim)[index]
    return out.unsqueeze(0), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)


def _attention_owner(model: Any) -> Any:
    """The ``PreTrainedModel`` whose config picks the attention (under PEFT, the base model)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@contextmanager
def varlen_attention(model: Any, max_length: int | None) -> Iterator[None]:
    """Train ``model`` with :func:`varlen_sdpa_attention`, restoring its attention afterwards.

    Args:
        model: The model being trained (a ``PeftModel`` is fine).
        max_length: The longest example the batches can hold.

    Raises:
        ValueError: :func:`varlen_unsupported` names a reason.
    """
    owner = _attention_owner(model)
    reason = varlen_unsupported(owner, max_length)
    if reason:
        raise ValueError(f"padding-free attention without flash-attention is not available: {reason}")
    before = owner.config._attn_implementation
    owner.set_attn_implementation(VARLEN_ATTENTION)
    try:
        yield
    finally:
        owner.set_attn_implementation(before)
