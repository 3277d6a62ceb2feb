"""Packed rows kept apart, for models the padding-free attention cannot stand in for.

TRL's best-fit-decreasing packing fills each ``max_length`` row with whole examples and then
flattens the batch into one padding-free row. flash-attention, and our
:func:`engine.training.varlen.varlen_sdpa_attention` for sdpa/eager models, attend within
each example of that row. For the rest (soft-capped logits, attention sinks, a sliding
window shorter than a row) transformers would build a block-diagonal mask over the whole
flattened row: for 16 rows of 128 tokens one 2,048 x 2,048 attention, 16 times the work.

:class:`RowPackedCollator` keeps the packed rows apart instead: position ids restart at each
example and there is no attention mask, so transformers derives a block-diagonal causal
mask per row (``find_packed_sequence_indices``) and examples still never see each other.
"""

from __future__ import annotations

from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


class RowPackedCollator(DataCollatorForLanguageModeling):
    """Collate packed rows as a (batch, length) tensor with restarting position ids.

    Args:
        pad_token_id: Pad id for the end of a row that packing did not fill.
    """

    def __init__(self, pad_token_id: int):
        super().__init__(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Batch ``examples`` (each with ``seq_lengths`` from packing); see the class docstring."""
        output = super().torch_call(examples)
        # With an attention mask present transformers would let examples in a row attend
        # to each other; without it the restarting position ids delimit them.
        output.pop("attention_mask", None)
        # The first token of each example must not be predicted from the previous example.
        output["labels"][output["position_ids"] == 0] = -100
        return output
