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
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from engine.training.student import causal_lm

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
    chunk = getattr(text, "attention_chunk_size", None)
    if chunk and (max_length is None or max_length > chunk):
        return f"it attends in {chunk}-token chunks and examples may be longer"
    if getattr(text, "model_type", "") in {"gpt_oss"}:
        return "its attention has sinks"
    if getattr(text, "is_encoder_decoder", False):
        return "it is an encoder-decoder model"
    return None


@dataclass
class _Group:
    """Examples attended in one sdpa call: which flat tokens, at which padded slots."""

    examples: int
    longest: int
    tokens: torch.Tensor | None  # flat positions of the group's tokens (None: every token)
    slots: torch.Tensor  # their slot in the (examples * longest) padded layout


# The plan for the row being processed: every layer of one forward gets the same cu tensor.
_PLAN: list[tuple[torch.Tensor, list[_Group]]] = []


def plan_groups(lengths: list[int]) -> list[list[int]]:
    """Examples (by index) to attend together, each group padded to its own longest.

    One group (one sdpa call) unless grouping by length (powers of two) at least halves the
    padded attention work: a packed row of one long example and short fillers would
    otherwise pay the long length for every filler.
    """
    by_size: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_size.setdefault(max(1, n - 1).bit_length(), []).append(i)
    single = len(lengths) * max(lengths) ** 2
    grouped = sum(len(g) * max(lengths[i] for i in g) ** 2 for g in by_size.values())
    if len(by_size) == 1 or 2 * grouped > single:
        return [list(range(len(lengths)))]
    return [by_size[k] for k in sorted(by_size)]


def _plan(cu_seq_lens: torch.Tensor, total: int) -> list[_Group]:
    """The groups for one flattened row (cached for the layers of one forward)."""
    if _PLAN and _PLAN[0][0] is cu_seq_lens:
        return _PLAN[0][1]
    cu = cu_seq_lens.to(torch.long)
    starts, lengths = cu[:-1].tolist(), (cu[1:] - cu[:-1]).tolist()
    device = cu.device
    plan = []
    for members in plan_groups(lengths):
        longest = max(lengths[i] for i in members)
        tokens = torch.cat([torch.arange(starts[i], starts[i] + lengths[i]) for i in members])
        slots = torch.cat([k * longest + torch.arange(lengths[i]) for k, i in enumerate(members)])
        whole = len(members) == len(lengths)
        plan.append(_Group(len(members), longest, None if whole else tokens.to(device), slots.to(device)))
    _PLAN[:] = [(cu_seq_lens, plan)]  # holding the tensor keeps its id from being reused
    return plan


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
        attention_mask: ``None`` for a flattened row; a padded batch's mask is used as is.
        dropout: Attention dropout probability.
        scaling: Softmax scale (default ``head_dim ** -0.5``).
        **kwargs: ``cu_seq_lens_q``: example starts, then the total (TRL's padding-free
            collator provides it; the model must pass its attention kwargs on).

    Returns:
        ``(output, None)`` with ``output`` of shape ``(1, tokens, heads, head_dim)``.

    Raises:
        ValueError: a flattened row came without its example boundaries (a model whose
            layers drop the attention kwargs), or a feature this attention lacks.
    """
    for feature in ("softcap", "s_aux"):
        if kwargs.get(feature) is not None:
            raise ValueError(f"{VARLEN_ATTENTION} does not implement {feature}; see varlen_unsupported()")
    groups = int(getattr(module, "num_key_value_groups", 1))
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    cu = kwargs.get("cu_seq_lens_q")
    if attention_mask is not None or query.shape[0] != 1 or query.shape[2] == 1:
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
    if cu is None:
        # Without boundaries a flattened row would be one long example: examples would see
        # each other, silently. TRL always sends them; a model that drops them cannot use this.
        raise ValueError(
            f"{VARLEN_ATTENTION}: a padding-free row reached attention without cu_seq_lens_q; "
            "this model's layers do not pass the attention kwargs on"
        )

    _, heads, total, dim = query.shape
    window = kwargs.get("sliding_window")
    if window is not None:
        longest = int(kwargs.get("max_length_q") or (cu[1:] - cu[:-1]).max())
        if longest > window:
            raise ValueError(
                f"{VARLEN_ATTENTION}: an example of {longest} tokens exceeds "
                f"the {window}-token sliding window"
            )
    flat = [x[0].transpose(0, 1) for x in (query, key, value)]  # (tokens, heads, dim)
    out = flat[0].new_empty(total, heads, dim)
    for group in _plan(cu, total):

        def padded(x: torch.Tensor, g: _Group = group) -> torch.Tensor:
            slots = x.new_zeros(g.examples * g.longest, x.shape[1], dim)
            slots[g.slots] = x if g.tokens is None else x[g.tokens]
            return slots.view(g.examples, g.longest, x.shape[1], dim).transpose(1, 2)

        q, k, v = (padded(x) for x in flat)
        res = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True)
        res = res.transpose(1, 2).reshape(group.examples * group.longest, heads, dim)[group.slots]
        out = res if group.tokens is None else out.index_copy(0, group.tokens, res)
    return out.unsqueeze(0), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)


def varlen_probe(model: Any, atol: float = 1e-3) -> str | None:
    """Why the padding-free attention gives this model wrong answers, or None when it does not.

    Runs a flattened row of two short examples once with :func:`varlen_sdpa_attention` and
    each example alone with the model's own attention, and compares the logits: a model
    whose layers drop the attention kwargs, or attend in a way this attention does not, is
    caught here instead of training on examples that see each other.
    """
    owner = causal_lm(model)  # its config picks the attention
    vocab = int(getattr(owner.config.get_text_config(), "vocab_size", 0) or 0)
    device = next(owner.parameters()).device
    gen = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, max(4, min(vocab, 64)), (n,), generator=gen) for n in (5, 3)]
    cu = torch.tensor([0, 5, 8], dtype=torch.int32, device=device)
    row = {
        "input_ids": torch.cat(examples)[None].to(device),
        "position_ids": torch.cat([torch.arange(5), torch.arange(3)])[None].to(device),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": 5,
        "max_length_k": 5,
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [model(input_ids=x[None].to(device), use_cache=False).logits[0].float() for x in examples]
            with varlen_attention(model, None, probe=False):
                flat = model(**row, use_cache=False).logits[0].float()
    except (ValueError, RuntimeError, TypeError) as err:
        return f"its layers do not take the padding-free attention ({err})"
    finally:
        model.train(was_training)
    error = float((flat - torch.cat(alone)).abs().max())
    if error > atol * max(1.0, float(torch.cat(alone).abs().max())):
        return f"its layers do not pass the example boundaries to attention (logits differ by {error:.3g})"
    return None


@contextmanager
def varlen_attention(model: Any, max_length: int | None, probe: bool = True) -> Iterator[None]:
    """Train ``model`` with :func:`varlen_sdpa_attention`, restoring its attention afterwards.

    Args:
        model: The model being trained (a ``PeftModel`` is fine).
        max_length: The longest example the batches can hold.
        probe: Check the model first with :func:`varlen_probe`.

    Raises:
        ValueError: :func:`varlen_unsupported` or :func:`varlen_probe` names a reason.
    """
    owner = causal_lm(model)
    reason = varlen_unsupported(owner, max_length) or (varlen_probe(model) if probe else None)
    if reason:
        raise ValueError(f"padding-free attention without flash-attention is not available: {reason}")
    before = owner.config._attn_implementation
    owner.set_attn_implementation(VARLEN_ATTENTION)
    try:
        yield
    finally:
        owner.set_attn_implementation(before)
