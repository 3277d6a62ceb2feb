"""TRL's ``SFTTrainer`` with a completion-only loss that scores only the completion tokens.

TRL computes the SFT loss with a fused, chunked LM head. On CUDA/XPU its Triton kernel
scores only the positions that carry a label. Everywhere else (every CPU run) it scores
every position of the batch, prompt and padding included, and computes entropy, top-1 and
log-probabilities over the whole vocabulary for each, through a loop of torch ops per tile.
For a prompt/completion task the prompt is most of the tokens, so on a CPU that is about a
third of a training step spent on positions whose loss is zero.

:class:`SenseiSFTTrainer` keeps TRL's path on Triton devices and for every feature it does
not reproduce (other loss types, label smoothing, MoE auxiliary losses, several processes,
scaled or soft-capped logits, vision inputs, PEFT prompt learning, very large vocabularies).
Otherwise it runs the backbone, projects only the hidden states whose next token has a label,
and takes the mean cross-entropy over them: the same loss and the same logged metrics (entropy, mean token
accuracy, token count), computed on the completion tokens alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from engine.training.student import causal_lm

# Config fields that change the logits (TRL's fused head applies them; the compact loss does not).
LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)
# Above this many logits (completion tokens x vocabulary) TRL's chunked head saves the memory.
MAX_COMPACT_LOGITS = 1 << 27  # 512 MiB of fp32 logits, as much again for their gradient


class SenseiSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss scores only completion tokens where TRL would score them all."""

    def _compact_loss_applies(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> bool:
        """Whether :meth:`compute_loss` may take the compact path for this batch."""
        args = self.args
        if return_outputs or "labels" not in inputs or "shift_labels" in inputs or "pixel_values" in inputs:
            return False
        if self.accelerator.device.type in ("cuda", "xpu") or self.accelerator.num_processes != 1:
            return False  # TRL's Triton kernel is already compact; multi-process reductions are its job
        if getattr(args, "loss_type", "nll") != "nll":
            return False
        if self.compute_loss_func is not None or self.label_smoother is not None:
            return False
        if getattr(self, "aux_loss_enabled", False):
            return False
        unwrapped = self.accelerator.unwrap_model(model)
        peft_config = getattr(unwrapped, "active_peft_config", None)
        if getattr(peft_config, "is_prompt_learning", False):
            return False  # virtual tokens are added by PeftModel.forward, which we would skip
        lm = causal_lm(unwrapped)
        text = lm.config.get_text_config()
        if any(getattr(text, name, None) is not None for name in LOGIT_TRANSFORMS):
            return False
        head = lm.get_output_embeddings()
        return isinstance(head, torch.nn.Linear) and getattr(lm, "base_model", lm) is not lm

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """Mean cross-entropy over the completion tokens (see the module docstring)."""
        if not self._compact_loss_applies(model, inputs, return_outputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        lm = causal_lm(self.accelerator.unwrap_model(model))
        head = lm.get_output_embeddings()
        labels = inputs["labels"][:, 1:]
        mask = labels != -100
        if int(mask.sum()) * head.out_features > MAX_COMPACT_LOGITS:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        backbone_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        backbone_inputs["use_cache"] = False
        hidden = lm.base_model(**backbone_inputs).last_hidden_state[:, :-1]
        targets = labels[mask]
        logits = head(hidden[mask]).float()
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(min=1)
        self._record_metrics(logits.detach(), targets, inputs)
        return loss

    def _record_metrics(self, logits: torch.Tensor, targets: torch.Tensor, inputs: dict[str, Any]) -> None:
        """The metrics TRL's ``compute_loss`` logs (entropy, mean token accuracy, tokens seen)."""
        mode = "train" if self.model is not None and self.model.training else "eval"
        valid = targets.numel()
        log_p = logits.log_softmax(-1)
        entropy = float(-(log_p.exp() * log_p).sum()) / valid if valid else 0.0
        accuracy = float((logits.argmax(-1) == targets).sum()) / valid if valid else 0.0
        self._metrics[mode]["entropy"].append(entropy)
        self._metrics[mode]["mean_token_accuracy"].append(accuracy)
        if mode == "train":
            # As TRL counts: the attention mask, or the whole flattened row when padding-free.
            if "attention_mask" in inputs:
                tokens = int(inputs["attention_mask"].sum())
            else:
                tokens = int(inputs["position_ids"].size(1))
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
