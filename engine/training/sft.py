"""Supervised fine-tuning of a student on teacher answers, with TRL's ``SFTTrainer``.

Rows are prompt/completion pairs. TRL then computes the loss on the completion only (its
``completion_only_loss`` defaults to on for prompt/completion data) and appends the
tokenizer's EOS to each completion, which is what teaches the student to stop.

Training streams its loss curve into the store (:class:`StoreCallback`), so the dashboard
draws it live from rows, not from scraped logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)
from trl import SFTConfig

from engine.context import JobContext
from engine.specs import StudentSpec
from engine.store import Store
from engine.training.packing import RowPackedCollator
from engine.training.student import causal_lm, device_precision, lora_config
from engine.training.trainer import SenseiSFTTrainer
from engine.training.varlen import has_varlen_kernel, varlen_attention, varlen_probe, varlen_unsupported

log = logging.getLogger(__name__)

# Keys of the trainer's log dict mirrored into the store's metric stream.
LOGGED_KEYS = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "eval_loss")
TRAIN_TIME_KEY = "sensei_train_time_s"
"""Key of the training seconds so far (every attempt of the run) in the trainer's log history."""


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss (or gradient norm) became NaN or infinite."""


@dataclass
class TrainResult:
    """What one SFT run produced.

    Attributes:
        model: The trained model (a ``PeftModel`` when LoRA was used).
        final_loss: Last logged training loss.
        first_loss: First logged training loss (to see that it fell).
        mean_loss: Loss averaged over all steps (the trainer's ``training_loss``).
        steps: Optimizer steps taken.
        tokens_seen: Non-padding tokens fed to the model.
        wall_time_s: Seconds spent training, every attempt of the run included (a resumed
            run adds the time up to its checkpoint; steps redone after a crash count once).
        tokens_per_s: ``tokens_seen / wall_time_s``.
        losses: ``(step, loss)`` of every logged point.
        epochs: Passes over the training rows (``steps`` x effective batch / rows).
        stop_reason: ``early_stop`` (validation loss stopped improving), ``max_steps``
            (the cap of an early-stopped run), ``epochs`` or ``steps`` (the budget ran out).
        best_step: The step whose weights were kept (early stopping), else the last step.
        best_eval_loss: The validation loss of those weights (early stopping only).

    All of them cover the whole training, however many times it was interrupted and resumed.
    """

    model: Any
    final_loss: float
    first_loss: float
    mean_loss: float
    steps: int
    tokens_seen: int
    wall_time_s: float
    tokens_per_s: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    epochs: float = 0.0
    stop_reason: str = "steps"
    best_step: int = 0
    best_eval_loss: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Figures of a particular stage (KD: ``on_policy_batches``, ``forced_batches``)."""


def steps_per_epoch(spec: StudentSpec, n_rows: int) -> int:
    """Optimizer steps for one pass over ``n_rows`` examples (one process)."""
    return max(1, math.ceil(n_rows / (spec.batch_size * spec.gradient_accumulation_steps)))


def step_budget(spec: StudentSpec, n_rows: int) -> int:
    """The most optimizer steps a run on ``n_rows`` examples takes under ``spec.budget``."""
    if spec.budget == "epochs":
        return max(1, math.ceil(spec.epochs * steps_per_epoch(spec, n_rows)))
    return spec.max_steps


def eval_interval(spec: StudentSpec, n_rows: int) -> int:
    """Steps between two validations with early stopping: once an epoch, within 10-50 steps."""
    if spec.eval_steps:
        return spec.eval_steps
    return min(max(steps_per_epoch(spec, n_rows), 10), 50)


def split_validation(rows: list[Any], spec: StudentSpec, seed: int) -> tuple[list[Any], list[Any]]:
    """Carve the early-stopping validation slice out of a run's own training rows.

    ``val_fraction`` of the rows (at least 4, at most 256, never more than half), picked with
    the run's seed; the test split is never touched. Returns ``(train, validation)``; with a
    budget other than ``early_stop``, or fewer than 8 rows, everything trains.
    """
    if spec.budget != "early_stop" or len(rows) < 8:
        return list(rows), []
    k = min(max(round(len(rows) * spec.val_fraction), 4), 256, len(rows) // 2)
    import random

    chosen = set(random.Random(f"val-{seed}-{len(rows)}").sample(range(len(rows)), k))
    train = [r for i, r in enumerate(rows) if i not in chosen]
    return train, [r for i, r in enumerate(rows) if i in chosen]


class StoreCallback(TrainerCallback):
    """Mirrors training logs into the store, reports progress, and stops on a NaN/inf loss.

    Args:
        store: The workspace (``None``: keep the curve in memory only).
        ctx: The job context for progress reports (``None`` outside a job).
        run_id: The run whose metric stream receives the points.
        progress_span: The share of the job's progress bar that training fills.
        keys: Keys of the trainer's log dict to mirror (default :data:`LOGGED_KEYS`).
        prefix: Prepended to each metric name (``"dpo/"`` for the DPO stage).
        step_offset: Added to the trainer's step (a later stage continues the curve's x axis).
    """

    def __init__(
        self,
        store: Store | None,
        ctx: JobContext | None,
        run_id: str | None,
        progress_span: tuple[float, float] = (0.0, 1.0),
        keys: tuple[str, ...] = LOGGED_KEYS,
        prefix: str = "",
        step_offset: int = 0,
    ):
        self.store, self.ctx, self.run_id = store, ctx, run_id
        self.lo, self.hi = progress_span
        self.keys, self.prefix, self.step_offset = keys, prefix, step_offset
        self.losses: list[tuple[int, float]] = []
        self.failure: str | None = None

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        values = {k: float(logs[k]) for k in self.keys if logs and isinstance(logs.get(k), int | float)}
        if not values:
            return  # e.g. the end-of-training summary (train_runtime, train_loss, ...)
        step = int(state.global_step)
        bad = [k for k in ("loss", "grad_norm") if k in values and not math.isfinite(values[k])]
        if bad:
            self.failure = (
                f"{' and '.join(bad)} became {values[bad[0]]} at step {step}: training stopped. "
                "Try a lower student.learning_rate or check the data for empty completions."
            )
            control.should_training_stop = True
            if self.store is not None:
                self.store.add_event(
                    "error",
                    "diverged",
                    self.failure,
                    job_id=self.ctx.job_id if self.ctx else None,
                    run_id=self.run_id,
                )
            values = {k: v for k, v in values.items() if math.isfinite(v)}
        if "loss" in values:
            self.losses.append((step, values["loss"]))
        if self.store is not None and self.run_id is not None and values:
            named = {self.prefix + k: v for k, v in values.items()}
            self.store.log_metrics(self.run_id, step + self.step_offset, named)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.ctx is None or not state.max_steps:
            return
        done = state.global_step / state.max_steps
        loss = f" · loss {self.losses[-1][1]:.3f}" if self.losses else ""
        self.ctx.progress(
            self.lo + (self.hi - self.lo) * done,
            f"{self.prefix}step {state.global_step}/{state.max_steps}{loss}",
        )


class TrainClock(TrainerCallback):
    """Training time and losses across interruptions, kept in the trainer's own log history.

    A resumed trainer restores its log history from the checkpoint, but its own clock,
    ``training_loss`` and throughput cover only the resumed stretch. This callback forces a
    log at every checkpoint and at the last step, so the history restored from a checkpoint
    ends exactly there and its losses partition every step trained (see :func:`mean_loss`),
    and stamps each log entry with the training seconds so far (:data:`TRAIN_TIME_KEY`),
    earlier attempts included.

    Args:
        resume_from: The checkpoint this attempt continues from (``None``: a fresh start).
    """

    def __init__(self, resume_from: Path | None = None):
        self.prior_s = checkpoint_train_time(resume_from) if resume_from else 0.0
        self._start: float | None = None

    def start(self) -> None:
        """Start this attempt's clock (just before ``trainer.train()``)."""
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds so far: earlier attempts plus this one."""
        return self.prior_s + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save or state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if state.log_history:  # the entry the trainer just appended (it is saved in checkpoints)
            state.log_history[-1][TRAIN_TIME_KEY] = round(self.elapsed(), 3)


def checkpoint_train_time(checkpoint: Path) -> float:
    """Training seconds up to ``checkpoint`` (0 when it predates :class:`TrainClock`)."""
    try:
        history = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["log_history"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
    stamped = [e[TRAIN_TIME_KEY] for e in history if isinstance(e, dict) and TRAIN_TIME_KEY in e]
    return float(stamped[-1]) if stamped else 0.0


def mean_loss(losses: list[tuple[int, float]]) -> float | None:
    """Mean per-step loss from logged ``(step, loss)`` points, each the mean over the steps since
    the one before (the trainer's ``training_loss`` when the last point is the last step)."""
    total, previous = 0.0, 0
    for step, loss in losses:
        total += loss * (step - previous)
        previous = step
    return total / previous if previous > 0 else None


def sft_config(
    spec: StudentSpec,
    out_dir: Path,
    seed: int,
    report_to: list[str],
    run_name: str | None = None,
    n_rows: int | None = None,
    early_stop: bool = False,
) -> SFTConfig:
    """The ``SFTConfig`` for a student recipe (names checked against transformers 5 / TRL 1).

    ``n_rows`` (the training rows) sets the step budget of ``budget: epochs`` and the
    validation interval; ``early_stop`` validates, checkpoints at each validation and loads
    the best checkpoint at the end.
    """
    # ``gpus=0`` asks for the CPU even on a GPU machine (e.g. to leave the GPU to a teacher).
    cuda = torch.cuda.is_available() and spec.gpus > 0
    # TRL turns bf16 on by default; on CPU that is autocast emulation, slower and noisier,
    # so ``auto`` means fp32 there (see ``resolve_precision``).
    precision = device_precision(spec)
    # Without packing TRL refuses to cut padding-free rows to ``max_length``; train_sft cuts
    # the tokenized rows itself (truncate_tokenized).
    max_length = None if spec.padding_free and not spec.packing else spec.max_length
    return SFTConfig(
        output_dir=str(out_dir),
        run_name=run_name or out_dir.name,
        use_cpu=not cuda,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # TRL defaults to activation checkpointing; small students do not need the memory back.
        activation_checkpointing=spec.gradient_checkpointing,
        # Best-fit decreasing packing keeps examples whole and implies padding-free batches;
        # packed examples never attend to each other (see padding_free_attention).
        packing=spec.packing,
        packing_strategy="bfd",
        padding_free=spec.padding_free,
        max_length=max_length,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        max_steps=step_budget(spec, n_rows) if n_rows else spec.max_steps,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        # transformers 5 folded warmup_ratio into warmup_steps: a float below 1 is a ratio.
        warmup_steps=spec.warmup_ratio,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=spec.logging_steps,
        # The default filter hides NaN/inf losses from logs; we want to see them and stop.
        logging_nan_inf_filter=False,
        include_num_input_tokens_seen="non_padding",
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        # Checkpoints hold model, optimizer, scheduler, RNG states and the step, so a resumed
        # run replays exactly the batches an uninterrupted one would have seen.
        **checkpointing_args(spec, n_rows or 1, early_stop),
        dataloader_num_workers=0,
        disable_tqdm=True,
        completion_only_loss=True,
    )


def checkpointing_args(spec: StudentSpec, n_rows: int, early_stop: bool) -> dict[str, Any]:
    """Checkpoint and validation settings: periodic checkpoints for resume, or, with early
    stopping, a checkpoint at each validation so that the best one can be loaded back."""
    if not early_stop:
        return {
            "save_strategy": "steps" if spec.save_steps else "no",
            "save_steps": spec.save_steps or 500,
            "save_total_limit": spec.save_total_limit,
            "eval_strategy": "no",
        }
    every = eval_interval(spec, n_rows)
    return {
        "eval_strategy": "steps",
        "eval_steps": every,
        "save_strategy": "steps",
        "save_steps": every,
        # The best checkpoint is always kept on top of the newest ones.
        "save_total_limit": spec.save_total_limit,
        "load_best_model_at_end": True,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "per_device_eval_batch_size": spec.batch_size,
    }


def truncate_tokenized(dataset: Dataset, max_length: int) -> Dataset:
    """Cut tokenized rows to ``max_length`` tokens and drop those left with no completion token.

    What TRL does when it truncates; used for padding-free batches without packing, where
    TRL leaves the rows whole.
    """

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        return {"input_ids": row["input_ids"][:max_length], "labels": row["labels"][:max_length]}

    cut_rows = dataset.map(cut, desc="Truncating train dataset")
    return cut_rows.filter(
        lambda row: any(t != -100 for t in row["labels"]), desc="Dropping fully masked train rows"
    )


def padding_free_attention(
    trainer: SenseiSFTTrainer, spec: StudentSpec, pad_token_id: int
) -> contextlib.AbstractContextManager[None]:
    """Make flattened padding-free batches fast on the model's attention; the context to train in.

    TRL flattens each batch into one row of real tokens (``packing`` or ``padding_free``).
    flash-attention attends within each example of such a row by itself; sdpa and eager get
    :func:`engine.training.varlen.varlen_sdpa_attention` for the run. A model that attention
    cannot stand in for keeps its rows apart with :class:`RowPackedCollator` instead.
    """
    if not (spec.packing or spec.padding_free) or has_varlen_kernel(trainer.model):
        return contextlib.nullcontext()
    # Packed rows hold whole examples of at most max_length tokens; unpacked padding-free
    # rows are cut to it by truncate_tokenized.
    reason = varlen_unsupported(causal_lm(trainer.model), spec.max_length) or varlen_probe(trainer.model)
    if reason is None:
        return varlen_attention(trainer.model, spec.max_length, probe=False)
    log.info("padding-free batches kept as padded rows: %s", reason)
    trainer.data_collator = RowPackedCollator(pad_token_id)
    return contextlib.nullcontext()


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: list[dict[str, Any]],
    spec: StudentSpec,
    out_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    report_to: list[str] | None = None,
    run_name: str | None = None,
    resume_from: Path | None = None,
    eval_rows: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on prompt/completion rows within the budget of ``spec.budget``.

    ``budget: steps`` trains ``spec.max_steps`` steps, ``epochs`` ``spec.epochs`` passes; with
    ``early_stop`` and ``eval_rows`` the validation loss on ``eval_rows`` is measured every
    :func:`eval_interval` steps, training stops after ``spec.patience`` validations without a
    better one (or at ``max_steps``), and the best weights are kept. Without ``eval_rows`` an
    ``early_stop`` budget trains ``max_steps``.

    Args:
        model: The student (full fine-tune, or LoRA when ``spec.lora.enabled``).
        tokenizer: Its tokenizer; must have an EOS token.
        train_rows: ``{"prompt", "completion"}`` dicts, as text or as chat messages
            (:func:`engine.training.formats.sft_rows`); the loss covers the completion only.
        spec: The SFT recipe.
        out_dir: Trainer folder: checkpoints go there every ``spec.save_steps`` steps.
        seed: Seed for data order, dropout and adapter initialisation.
        callbacks: Extra trainer callbacks; a :class:`StoreCallback` among them is used for
            the loss record and divergence check, else a private one is added.
        report_to: Trainer integrations (``[]`` for none; ``None``:
            :func:`engine.training.tracking.report_to`).
        run_name: Name shown by the integrations (default: the name of ``out_dir``).
        resume_from: A checkpoint folder to continue from (same data, spec and seed).
        eval_rows: The validation rows of early stopping (same shape as ``train_rows``).

    Returns:
        The :class:`TrainResult`.

    Raises:
        TrainingDiverged: The loss or gradient norm became NaN or infinite.
    """
    if not train_rows:
        raise ValueError("train_sft: no training rows")
    if tokenizer.eos_token is None:
        raise ValueError("train_sft: the tokenizer has no EOS token, so the student could not learn to stop")
    if report_to is None:
        from engine.training.tracking import report_to as default_report_to

        report_to = default_report_to()
    callbacks = list(callbacks or [])
    recorder = next((c for c in callbacks if isinstance(c, StoreCallback)), None)
    if recorder is None:
        recorder = StoreCallback(None, None, None)
        callbacks.append(recorder)
    clock = TrainClock(resume_from)
    callbacks.append(clock)

    # Seed before PEFT wraps the model: the adapter's random init must be reproducible too.
    set_seed(seed)
    early_stop = spec.budget == "early_stop" and bool(eval_rows)
    if early_stop:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=spec.patience))
    dataset = _rows_dataset(train_rows)
    trainer = SenseiSFTTrainer(
        model=model,
        args=sft_config(spec, Path(out_dir), seed, report_to, run_name, len(train_rows), early_stop),
        train_dataset=dataset,
        eval_dataset=_rows_dataset(eval_rows) if early_stop and eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(spec.lora) if spec.lora.enabled else None,
        callbacks=callbacks,
    )
    if spec.padding_free and not spec.packing:
        trainer.train_dataset = truncate_tokenized(trainer.train_dataset, spec.max_length)
        if trainer.eval_dataset is not None:
            trainer.eval_dataset = truncate_tokenized(trainer.eval_dataset, spec.max_length)
    attention = padding_free_attention(trainer, spec, int(tokenizer.pad_token_id))
    clock.start()
    with attention:
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = clock.elapsed()
    if recorder.failure:
        raise TrainingDiverged(recorder.failure)

    # The state (restored from the checkpoint, then continued) counts tokens and holds every
    # logged loss of the whole run; the callback and ``output`` saw only this attempt.
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    losses = [
        (int(e["step"]), float(e["loss"]))
        for e in trainer.state.log_history
        if "loss" in e and "step" in e and math.isfinite(float(e["loss"]))
    ]
    mean = mean_loss(losses)
    state = trainer.state
    steps = int(state.global_step)
    if early_stop:
        stop_reason = "early_stop" if steps < state.max_steps else "max_steps"
        best = state.best_model_checkpoint
        best_step = int(best.rsplit("-", 1)[-1]) if best else steps
    else:
        stop_reason, best_step = ("epochs" if spec.budget == "epochs" else "steps"), steps
    per_step = spec.batch_size * spec.gradient_accumulation_steps * max(1, trainer.accelerator.num_processes)
    return TrainResult(
        model=trainer.model,
        final_loss=losses[-1][1] if losses else float(output.training_loss),
        first_loss=losses[0][1] if losses else float(output.training_loss),
        mean_loss=float(output.training_loss) if mean is None else mean,
        steps=steps,
        tokens_seen=tokens,
        wall_time_s=wall,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        losses=list(losses),
        epochs=round(steps * per_step / len(train_rows), 3),
        stop_reason=stop_reason,
        best_step=best_step,
        best_eval_loss=float(state.best_metric) if early_stop and state.best_metric is not None else None,
    )


def _rows_dataset(rows: list[dict[str, Any]] | None) -> Dataset:
    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows or []])
