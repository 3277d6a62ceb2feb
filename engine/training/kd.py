"""Token-level knowledge distillation with TRL's ``DistillationTrainer`` (recipes ``kd``, ``sft+kd``).

The student matches a local teacher's next-token distribution on every completion token,
under TRL's generalized Jensen-Shannon divergence (``kd.beta``: 0 forward KL, 1 reverse KL)
at ``kd.temperature``. TRL's trainer is fully on-policy: every batch is sampled by the student
and scored by the teacher. :class:`SenseiDistillationTrainer` adds GKD's on-policy fraction
(``kd.lmbda``): a batch is sampled by the student with probability ``lmbda``; otherwise its
completions are the teacher's own answers (from the teacher job), tokenized as generation
would have produced them. ``lmbda=0`` never generates.

Where TRL projects every completion position through its chunked LM-head kernel (on a CPU
without Triton, padding included, with a hand-written backward), the compact loss projects
only the positions that carry a completion token and lets autograd differentiate: the same
divergence (checked against TRL's on a fixed batch in the tests), fewer FLOPs on a CPU. It
falls back to TRL's path for anything it does not reproduce (Triton devices, scaled or
soft-capped logits, multimodal inputs, several processes, very large vocabularies).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import EarlyStoppingCallback, PreTrainedTokenizerBase, TrainerCallback, set_seed
from trl import DistillationConfig, DistillationTrainer
from trl.trainer.utils import pad

from engine.specs import SpecError, StudentSpec
from engine.training.sft import StoreCallback, TrainingDiverged, TrainResult, checkpointing_args, step_budget
from engine.training.student import causal_lm, device_precision, lora_config
from engine.training.trainer import LOGIT_TRANSFORMS, MAX_COMPACT_LOGITS

MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
)


def tokenizer_problem(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase) -> str | None:
    """Why a teacher's distributions cannot teach this student token by token (None when they can).

    Token-level KD compares the two next-token distributions id by id, so both tokenizers must
    map the same text to the same ids: the same vocabulary, ids included.
    """
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    if s_vocab == t_vocab:
        return None
    only_s = len(s_vocab.keys() - t_vocab.keys())
    only_t = len(t_vocab.keys() - s_vocab.keys())
    moved = sum(1 for k in s_vocab.keys() & t_vocab.keys() if s_vocab[k] != t_vocab[k])
    return (
        f"the student's tokenizer ({len(s_vocab)} tokens) and the teacher's ({len(t_vocab)}) differ: "
        f"{only_s} tokens only in the student's, {only_t} only in the teacher's, {moved} with other ids"
    )


def require_shared_tokenizer(
    student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase, name: str
) -> None:
    """Raise a SpecError naming ``teacher.model`` when the tokenizers differ (:func:`tokenizer_problem`)."""
    if problem := tokenizer_problem(student, teacher):
        raise SpecError(
            f"teacher.model: KD needs a teacher sharing the student's tokenizer; {name}: {problem}. "
            "Use a teacher of the student's family, or the sft recipe (which only needs its answers)"
        )


def divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token generalized JSD and student entropy (nats) of ``[N, V]`` logits, as TRL defines them.

    ``beta=0``: KL(teacher || student); ``beta=1``: KL(student || teacher); in between,
    ``beta KL(t || m) + (1 - beta) KL(s || m)`` with ``m = (1 - beta) p_s + beta p_t``. Both
    distributions are taken at ``temperature``.
    """
    log_ps = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    ps = log_ps.exp()
    if beta == 0.0:
        per_token = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    elif beta == 1.0:
        per_token = (ps * (log_ps - log_pt)).sum(-1)
    else:
        log_m = torch.logaddexp(log_ps + math.log(1 - beta), log_pt + math.log(beta))
        kl_t = (log_pt.exp() * (log_pt - log_m)).sum(-1)
        kl_s = (ps * (log_ps - log_m)).sum(-1)
        per_token = beta * kl_t + (1 - beta) * kl_s
    entropy = -(ps * log_ps).sum(-1).detach()
    return per_token, entropy


class SenseiDistillationTrainer(DistillationTrainer):
    """``DistillationTrainer`` with an on-policy fraction and a compact loss (see the module docstring).

    Args:
        lmbda: Share of training batches the student samples itself; the rest use the
            dataset's ``completion`` (the teacher's answer). Validation always uses the answers.
        stop_token_id: Token that ends a completion taken from the dataset (EOS, or a chat
            template's end of turn), as generation would end it.
        *args, **kwargs: As for ``DistillationTrainer``; rows need ``prompt`` and ``completion``.

    Attributes:
        generated_batches: Batches the student sampled (on-policy).
        forced_batches: Batches that used the teacher's answers.
    """

    def __init__(self, *args: Any, lmbda: float = 1.0, stop_token_id: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lmbda = lmbda
        self.stop_token_id = self._tokenizer.eos_token_id if stop_token_id is None else stop_token_id
        # Its own stream: the choice must not shift the sampling or dropout random numbers.
        self._policy_rng = random.Random(self.args.seed)
        self.generated_batches = 0
        self.forced_batches = 0

    # ------------------------------------------------------------------ batches
    def _training(self) -> bool:
        return bool(self.model is not None and self.model.training)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        training = self._training()
        if training and self._policy_rng.random() < self.lmbda:
            self.generated_batches += 1
            self._metrics["train"]["on_policy"].append(1.0)
            return super()._generate_and_score_completions(inputs)
        if training:
            self.forced_batches += 1
            self._metrics["train"]["on_policy"].append(0.0)
        return self.teacher_forced_batch(inputs)

    def completion_ids(self, text: str) -> list[int]:
        """A dataset completion as the tokens generation would produce: the text, then the stop token."""
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return [*ids, self.stop_token_id][: self.max_completion_length]

    def teacher_forced_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """The batch of ``_generate_and_score_completions`` with the rows' own completions."""
        device = self.accelerator.device
        prompt_ids_list, _, _ = self._tokenize_prompts([x["prompt"] for x in inputs])
        completion_list = [self.completion_ids(x["completion"]) for x in inputs]
        pad_id = self._tokenizer.pad_token_id
        multiple = self.pad_to_multiple_of if isinstance(self.pad_to_multiple_of, int) else None

        def padded(seqs: list[list[int]], value: int, side: str) -> torch.Tensor:
            tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
            return pad(tensors, padding_value=value, padding_side=side, pad_to_multiple_of=multiple)

        prompt_ids = padded(prompt_ids_list, pad_id, "left").to(device)
        prompt_mask = padded([[1] * len(p) for p in prompt_ids_list], 0, "left").to(device)
        completion_ids = padded(completion_list, pad_id, "right").to(device)
        completion_mask = padded([[1] * len(c) for c in completion_list], 0, "right").to(device)
        mode = "train" if self._training() else "eval"
        if mode == "train":  # counted as TRL counts a generated batch: prompt and completion tokens
            self.state.num_input_tokens_seen += int(prompt_mask.sum() + completion_mask.sum())
        self._metrics[mode]["num_tokens"] = [self.state.num_input_tokens_seen]
        return {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "num_items_in_batch": self.accelerator.gather(completion_mask.sum()).sum(),
        }

    # --------------------------------------------------------------------- loss
    def _compact_loss_applies(self, student: Any, inputs: dict[str, Any]) -> bool:
        if self.accelerator.device.type in ("cuda", "xpu") or self.accelerator.num_processes != 1:
            return False  # TRL's Triton kernel is already compact; multi-process reductions are its job
        if any(k in inputs for k in MULTIMODAL_KEYS) or self.teacher_model is None:
            return False
        teacher = causal_lm(self.accelerator.unwrap_model(self.teacher_model))
        for lm in (causal_lm(student), teacher):
            text = lm.config.get_text_config()
            if any(getattr(text, name, None) is not None for name in LOGIT_TRANSFORMS):
                return False
            head = lm.get_output_embeddings()
            if not isinstance(head, torch.nn.Linear) or getattr(lm, "base_model", lm) is lm:
                return False
        vocab = causal_lm(student).get_output_embeddings().out_features
        return int(inputs["completion_mask"].sum()) * vocab <= MAX_COMPACT_LOGITS

    def _compute_loss(self, unwrapped_student: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> Any:
        """TRL's loss, computed on the completion tokens alone where that is exact (module docstring)."""
        if not self._compact_loss_applies(unwrapped_student, inputs):
            return super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        valid = mask.bool()
        start, width = inputs["prompt_ids"].size(1) - 1, inputs["completion_ids"].size(1)

        def hidden(lm: Any) -> torch.Tensor:
            # Position t predicts token t + 1: the prompt's last position predicts the first answer token.
            states = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return states.last_hidden_state[:, start : start + width][valid]

        student = causal_lm(unwrapped_student)
        teacher = causal_lm(self.accelerator.unwrap_model(self.teacher_model))
        self.teacher_model.eval()
        with torch.no_grad():
            teacher_logits = teacher.get_output_embeddings()(hidden(teacher))
        student_logits = student.get_output_embeddings()(hidden(student))
        per_token, entropy = divergence(student_logits, teacher_logits, self.beta, self.temperature)
        n_valid = valid.sum()
        if num_items_in_batch is None:
            loss = per_token.sum() / n_valid.clamp(min=1)
        else:
            loss = per_token.sum() / torch.as_tensor(num_items_in_batch, device=per_token.device)
        return loss, entropy.sum(), n_valid


def kd_config(
    spec: StudentSpec,
    out_dir: Path,
    seed: int,
    report_to: list[str],
    run_name: str | None = None,
    n_rows: int | None = None,
    early_stop: bool = False,
) -> DistillationConfig:
    """The ``DistillationConfig`` for a student recipe: the SFT stage's choices (precision,
    schedule, budget, checkpoints) plus ``student.kd``; answers are sampled up to
    ``student.max_new_tokens`` tokens, as at evaluation."""
    cuda = torch.cuda.is_available() and spec.gpus > 0
    precision = device_precision(spec)
    kd = spec.kd
    max_steps = kd.max_steps or (step_budget(spec, n_rows) if n_rows else spec.max_steps)
    return DistillationConfig(
        output_dir=str(out_dir),
        run_name=run_name or out_dir.name,
        use_cpu=not cuda,
        # TRL defaults to bf16 and activation checkpointing: on a CPU that is emulated autocast and
        # recomputation, slower and noisier for a small student (the SFT stage's choice, too).
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=spec.gradient_checkpointing,
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        max_steps=max_steps,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=spec.warmup_ratio,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=spec.logging_steps,
        logging_nan_inf_filter=False,
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        **checkpointing_args(spec, n_rows or 1, early_stop),
        dataloader_num_workers=0,
        disable_tqdm=True,
        beta=kd.beta,
        temperature=kd.temperature,
        max_completion_length=spec.max_new_tokens,
    )


def train_kd(
    model: Any,
    teacher: Any,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: list[dict[str, Any]],
    spec: StudentSpec,
    out_dir: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    report_to: list[str] | None = None,
    run_name: str | None = None,
    eval_rows: list[dict[str, Any]] | None = None,
    stop_token_id: int | None = None,
) -> TrainResult:
    """Distil ``teacher`` into ``model`` on ``train_rows`` within the student's budget.

    Args:
        model: The student (its LoRA adapters keep training when it is a ``PeftModel``; a plain
            model gets fresh ones when ``spec.lora.enabled``).
        teacher: The teacher, sharing the student's tokenizer (frozen, in eval mode).
        tokenizer: The shared tokenizer.
        train_rows: ``{"prompt", "completion"}`` rows; the prompt as text or chat messages, the
            completion as text (the teacher's answer, used by the batches not sampled on-policy).
        spec: The recipe (``spec.kd`` holds the KD settings).
        out_dir: Trainer folder (checkpoints of early stopping).
        seed: Seed of data order, sampling and the on-policy draws.
        callbacks: Extra trainer callbacks; a :class:`StoreCallback` among them records the loss.
        report_to: Trainer integrations (``[]`` for none).
        run_name: Name shown by the integrations.
        eval_rows: Validation rows of ``budget: early_stop`` (scored on the teacher's answers).
        stop_token_id: Token that ends a dataset completion (default EOS).

    Returns:
        The :class:`~engine.training.sft.TrainResult`; its ``stop_reason`` and ``best_step`` as
        for SFT.

    Raises:
        TrainingDiverged: The loss or gradient norm became NaN or infinite.
    """
    if not train_rows:
        raise ValueError("train_kd: no training rows")
    callbacks = list(callbacks or [])
    recorder = next((c for c in callbacks if isinstance(c, StoreCallback)), None)
    if recorder is None:
        recorder = StoreCallback(None, None, None)
        callbacks.append(recorder)
    set_seed(seed)
    early_stop = spec.budget == "early_stop" and bool(eval_rows) and spec.kd.max_steps is None
    if early_stop:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=spec.patience))
    peft = spec.lora.enabled and not hasattr(model, "peft_config")
    trainer = SenseiDistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=kd_config(spec, Path(out_dir), seed, report_to or [], run_name, len(train_rows), early_stop),
        train_dataset=_rows_dataset(train_rows),
        eval_dataset=_rows_dataset(eval_rows) if early_stop else None,
        processing_class=tokenizer,
        peft_config=lora_config(spec.lora) if peft else None,
        callbacks=callbacks,
        lmbda=spec.kd.lmbda,
        stop_token_id=stop_token_id,
    )
    start = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - start
    if recorder.failure:
        raise TrainingDiverged(recorder.failure)
    losses = recorder.losses or [
        (int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e
    ]
    state = trainer.state
    steps = int(state.global_step)
    if early_stop:
        stop_reason = "early_stop" if steps < state.max_steps else "max_steps"
        best = state.best_model_checkpoint
        best_step = int(best.rsplit("-", 1)[-1]) if best else steps
    else:
        stop_reason, best_step = (
            ("steps" if spec.kd.max_steps or spec.budget != "epochs" else "epochs"),
            steps,
        )
    tokens = int(state.num_input_tokens_seen or 0)
    per_step = spec.batch_size * spec.gradient_accumulation_steps
    return TrainResult(
        model=trainer.model,
        final_loss=losses[-1][1] if losses else float(output.training_loss),
        first_loss=losses[0][1] if losses else float(output.training_loss),
        mean_loss=float(output.training_loss),
        steps=steps,
        tokens_seen=tokens,
        wall_time_s=wall,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        losses=list(losses),
        epochs=round(steps * per_step / len(train_rows), 3),
        stop_reason=stop_reason,
        best_step=best_step,
        best_eval_loss=float(state.best_metric) if early_stop and state.best_metric is not None else None,
        info={"on_policy_batches": trainer.generated_batches, "forced_batches": trainer.forced_batches},
    )


def _rows_dataset(rows: list[dict[str, Any]] | None) -> Dataset:
    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows or []])
