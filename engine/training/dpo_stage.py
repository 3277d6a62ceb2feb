"""The DPO stage of a train job: pairs from the SFT student's own mistakes, then DPO.

Runs after SFT when ``student.dpo.enabled``. The SFT student answers (greedily) up to
``dpo.max_pairs`` of its own training prompts; every answer that fails the task metric or
does not parse is paired with the teacher's accepted answer
(:func:`engine.training.pairs.build_dpo_pairs`), and DPO trains on those pairs with the SFT
student as its frozen reference. Student answers and pairs use the run's prompt format
(:mod:`engine.training.formats`). No failing answer means nothing to prefer: the stage is
skipped with an event and the SFT model is kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engine.context import JobContext
from engine.judges.curation import dpo_rule_fn
from engine.specs import ExperimentSpec
from engine.store import Store
from engine.training.dpo import DPO_LOGGED_KEYS, train_dpo
from engine.training.formats import dpo_rows, generation_options, generation_prompts, resolve_prompt_format
from engine.training.generate import generate
from engine.training.health import HealthCallback
from engine.training.pairs import build_dpo_pairs
from engine.training.sft import StoreCallback
from engine.training.student import causal_lm

DPO_SPAN = (0.6, 0.85)
"""Share of the train job's progress bar used by pair building and DPO (SFT ends at its start)."""
_PAIRS_END = 0.65


def run_dpo_stage(
    ctx: JobContext,
    run_id: str,
    spec: ExperimentSpec,
    rows: list[dict[str, Any]],
    model: Any,
    tokenizer: Any,
    writer: Store | None,
    sft_steps: int,
    report_to: list[str],
    scratch: Path,
) -> Any:
    """Build DPO pairs from the SFT student's failures and train on them.

    Args:
        ctx: The train job's context (progress, events).
        run_id: The run whose metric stream gets the ``dpo/`` curves.
        spec: The experiment spec (``student.dpo`` holds the settings).
        rows: The run's training rows (``prompt``, ``completion`` = accepted teacher answer).
        model: The SFT student.
        tokenizer: Its tokenizer.
        writer: The store to record into (``None`` on non-zero ranks).
        sft_steps: SFT steps taken; DPO points are logged after them on the same x axis.
        report_to: Trainer integrations.
        scratch: Trainer scratch folder (removed afterwards: DPO keeps no checkpoints).

    Returns:
        The DPO-trained model, or ``model`` unchanged when there were no pairs.
    """
    student, dpo = spec.student, spec.student.dpo
    subset = rows[: dpo.max_pairs]
    lo = DPO_SPAN[0]

    def on_batch(done: int, total: int) -> None:
        ctx.progress(lo + (_PAIRS_END - lo) * done / total, f"DPO pairs: student answers {done}/{total}")

    prompt_format = resolve_prompt_format(student.prompt_format, tokenizer)
    answers = generate(
        model,
        tokenizer,
        generation_prompts(tokenizer, [r["prompt"] for r in subset], prompt_format, spec.task.system_prompt),
        student.max_new_tokens,
        student.eval_batch_size,
        on_batch=on_batch if writer is not None else None,
        **generation_options(tokenizer, prompt_format, causal_lm(model)),
    )
    pairs = build_dpo_pairs(
        [r["prompt"] for r in subset],
        [r["completion"] for r in subset],
        answers,
        spec.task,
        # With curation.rules a student answer a rule rejects fails too, even if it matches.
        rule_fn=dpo_rule_fn(spec, ctx.store.home),
    )
    if not pairs:
        _note(
            writer,
            ctx,
            run_id,
            "dpo_skipped",
            f"DPO skipped: the SFT student answered all {len(subset)} "
            "training prompts correctly, so there is nothing to prefer",
        )
        return model
    _note(
        writer,
        ctx,
        run_id,
        "dpo_pairs",
        f"DPO on {len(pairs)} pairs (the SFT student failed {len(pairs)} of {len(subset)} training prompts)",
    )
    callbacks = [
        StoreCallback(
            writer,
            ctx if writer is not None else None,
            run_id,
            progress_span=(_PAIRS_END, DPO_SPAN[1]),
            keys=DPO_LOGGED_KEYS,
            prefix="dpo/",
            step_offset=sft_steps,
        ),
        HealthCallback(writer, ctx.job_id, run_id, prefix="dpo/"),
    ]
    result = train_dpo(
        model,
        tokenizer,
        dpo_rows(pairs, prompt_format, spec.task.system_prompt),
        student,
        scratch,
        seed=int(ctx.spec.get("seed", 0)),
        callbacks=callbacks,
        report_to=report_to,
        run_name=f"{run_id}-dpo",
    )
    shutil.rmtree(scratch, ignore_errors=True)
    if result.margins and writer is not None:
        first, last = result.margins[0][1], result.margins[-1][1]
        _note(
            writer,
            ctx,
            run_id,
            "dpo_done",
            f"DPO: reward margin {first:.3f} -> {last:.3f} in {result.steps} steps",
        )
    return result.model


def _note(writer: Store | None, ctx: JobContext, run_id: str, kind: str, message: str) -> None:
    ctx.log.info(message)
    if writer is not None:
        writer.add_event("info", kind, message, job_id=ctx.job_id, run_id=run_id)
