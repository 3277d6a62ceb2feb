"""Direct preference optimisation of a student on (prompt, chosen, rejected) pairs, with TRL.

Used after SFT (``StudentSpec.dpo``): the reference model is a frozen copy of the SFT
student, so DPO moves the policy only as far as the preferences pull it away from what SFT
learned. Pairs come from :func:`engine.training.pairs.build_dpo_pairs`.

The stage's curves go to the store under ``dpo/`` names (``dpo/loss``,
``dpo/rewards/margins``, ...), through the same :class:`StoreCallback` as SFT.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback, set_seed
from trl import DPOConfig, DPOTrainer

from engine.specs import StudentSpec
from engine.training.sft import StoreCallback, TrainingDiverged

DPO_LOGGED_KEYS = (
    "loss",
    "grad_norm",
    "learning_rate",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
)
"""Keys of DPOTrainer's logs mirrored into the store (prefixed ``dpo/``)."""


@dataclass
class DpoResult:
    """What one DPO stage produced.

    Attributes:
        model: The trained policy.
        steps: Optimizer steps taken.
        wall_time_s: Seconds spent in ``trainer.train()``.
        margins: ``(step, mean chosen-minus-rejected reward)`` of every logged point.
        final_loss: Last logged DPO loss.
    """

    model: Any
    steps: int
    wall_time_s: float
    margins: list[tuple[int, float]] = field(default_factory=list)
    final_loss: float = float("nan")


class _MarginRecorder(TrainerCallback):
    """Keeps the reward margin curve in memory (the store copy is the StoreCallback's)."""

    def __init__(self) -> None:
        self.margins: list[tuple[int, float]] = []
        self.losses: list[float] = []

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        if isinstance(logs.get("rewards/margins"), int | float):
            self.margins.append((int(state.global_step), float(logs["rewards/margins"])))
        if isinstance(logs.get("loss"), int | float):
            self.losses.append(float(logs["loss"]))


def dpo_config(spec: StudentSpec, out_dir: Path, seed: int, report_to: list[str], run_name: str) -> DPOConfig:
    """The ``DPOConfig`` for a student recipe's DPO stage (names checked against TRL 1.16)."""
    cuda = torch.cuda.is_available() and spec.gpus > 0
    dpo = spec.dpo
    return DPOConfig(
        output_dir=str(out_dir),
        run_name=run_name,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        # TRL defaults to activation checkpointing; small students do not need the memory back.
        activation_checkpointing=False,
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        max_length=spec.max_length,
        per_device_train_batch_size=dpo.batch_size,
        max_steps=dpo.max_steps,
        learning_rate=dpo.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        logging_steps=max(1, min(spec.logging_steps, dpo.max_steps)),
        logging_nan_inf_filter=False,
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        # A DPO stage is short: a crash re-runs it from the SFT checkpoint rather than resuming.
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train_dpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    spec: StudentSpec,
    out_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    ref_model: PreTrainedModel | None = None,
    report_to: list[str] | None = None,
    run_name: str | None = None,
) -> DpoResult:
    """Train ``model`` with DPO on preference pairs for ``spec.dpo.max_steps`` steps.

    Args:
        model: The policy (usually the SFT student); a PEFT model uses its base as reference.
        tokenizer: Its tokenizer (needs a pad and an EOS token).
        pairs: ``{"prompt", "chosen", "rejected"}`` dicts, as text or as chat messages
            (:func:`engine.training.formats.dpo_rows`).
        spec: The student recipe; ``spec.dpo`` holds the DPO settings.
        out_dir: Trainer scratch folder.
        seed: Seed for data order and dropout.
        callbacks: Extra trainer callbacks (e.g. a ``StoreCallback`` with ``prefix="dpo/"``).
        ref_model: The frozen reference; default: a copy of ``model`` as it is now.
        report_to: Trainer integrations (default ``[]``).
        run_name: Name shown by the integrations.

    Returns:
        The :class:`DpoResult`.

    Raises:
        ValueError: No pairs.
        TrainingDiverged: A ``StoreCallback`` saw the loss become NaN or infinite.
    """
    if not pairs:
        raise ValueError("train_dpo: no preference pairs")
    set_seed(seed)
    is_peft = hasattr(model, "peft_config")
    if ref_model is None and not is_peft:
        # DPOTrainer would otherwise reload the reference from the model's original path,
        # i.e. the pre-SFT base: the reference must be the student as it is now.
        ref_model = copy.deepcopy(model).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    recorder = _MarginRecorder()
    callbacks = [*(callbacks or []), recorder]
    out_dir = Path(out_dir)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=dpo_config(spec, out_dir, seed, report_to or [], run_name or out_dir.name),
        train_dataset=Dataset.from_list(
            [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
        ),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    failure = next((c.failure for c in callbacks if isinstance(c, StoreCallback) and c.failure), None)
    if failure:
        raise TrainingDiverged(failure)
    return DpoResult(
        model=trainer.model,
        steps=int(trainer.state.global_step),
        wall_time_s=wall,
        margins=list(recorder.margins),
        final_loss=recorder.losses[-1] if recorder.losses else float("nan"),
    )
