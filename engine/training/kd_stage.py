"""The KD stage of a train job (recipes ``kd`` and ``sft+kd``): load the local teacher, check
that it shares the student's tokenizer, distil (:func:`engine.training.kd.train_kd`).

For ``kd`` it is the run's only training and its curve is the run's ``loss``; after SFT
(``sft+kd``) it continues from the SFT result and its points are ``kd/loss``, ... on the same
step axis, after the SFT steps. The teacher is loaded once per process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engine.context import JobContext
from engine.data.prompts import chat_messages
from engine.specs import ExperimentSpec, SpecError
from engine.store import Store
from engine.training.formats import PromptFormat, end_of_turn_id
from engine.training.health import HealthCallback
from engine.training.kd import require_shared_tokenizer, train_kd
from engine.training.model_refs import resolve_model_ref
from engine.training.sft import LOGGED_KEYS, StoreCallback, TrainResult
from engine.training.student import load_student

_TEACHERS: dict[tuple[str, str | None, str], Any] = {}


def load_kd_teacher(store: Store, spec: ExperimentSpec, tokenizer: Any, device: str | None = None) -> Any:
    """The experiment's local teacher as a frozen model, after checking it shares ``tokenizer``.

    Raises:
        engine.specs.SpecError: the teacher is not local, is a folder outside the workspace's
            model roots (:class:`~engine.training.model_refs.ModelNotAllowed`), cannot be
            loaded, or has another tokenizer (the message names the field).
    """
    teacher = spec.teacher
    if teacher.kind != "local":
        recipe = spec.student.recipe
        raise SpecError(f"student.recipe: {recipe} needs teacher.kind: local (got {teacher.kind})")
    ref = resolve_model_ref(store, teacher.model, "teacher.model")
    key = (ref, teacher.revision, str(device))
    if key not in _TEACHERS:
        try:
            model, teacher_tok = load_student(ref, teacher.revision, device=device)
        except (OSError, ValueError) as err:
            raise SpecError(f"teacher.model: cannot load the KD teacher {teacher.model!r}: {err}") from err
        require_shared_tokenizer(tokenizer, teacher_tok, teacher.model)
        model.eval().requires_grad_(False)
        _TEACHERS.clear()
        _TEACHERS[key] = model
    return _TEACHERS[key]


def kd_rows(rows: list[dict[str, Any]], fmt: PromptFormat, system_prompt: str = "") -> list[dict[str, Any]]:
    """Rows as the KD trainer reads them: the prompt as text (``raw``) or chat messages, the
    completion (the teacher's answer) always as text."""
    if fmt == "raw":
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    return [
        {"prompt": chat_messages(r["prompt"], system_prompt), "completion": r["completion"]} for r in rows
    ]


def run_kd_stage(
    ctx: JobContext,
    run_id: str,
    spec: ExperimentSpec,
    train_rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]],
    model: Any,
    tokenizer: Any,
    writer: Store | None,
    report_to: list[str],
    scratch: Path,
    prompt_format: PromptFormat,
    span: tuple[float, float],
    after_steps: int = 0,
) -> TrainResult:
    """Distil the local teacher into ``model``; returns the KD :class:`TrainResult`.

    Args:
        after_steps: Steps of a previous stage (SFT): when non-zero the points are logged as
            ``kd/...`` after them, otherwise as the run's own curve.
    """
    student = spec.student
    device = "cpu" if student.gpus == 0 else None
    teacher = load_kd_teacher(ctx.store, spec, tokenizer, device)
    prefix = "kd/" if after_steps else ""
    callbacks = [
        StoreCallback(
            writer,
            ctx if writer is not None else None,
            run_id,
            progress_span=span,
            keys=(*LOGGED_KEYS, "on_policy"),
            prefix=prefix,
            step_offset=after_steps,
        ),
        HealthCallback(writer, ctx.job_id, run_id, prefix=prefix),
    ]
    stop = end_of_turn_id(tokenizer) if prompt_format == "chat" else None
    system = spec.task.system_prompt
    result = train_kd(
        model,
        teacher,
        tokenizer,
        kd_rows(train_rows, prompt_format, system),
        student,
        scratch,
        seed=int(ctx.spec.get("seed", 0)),
        callbacks=callbacks,
        report_to=report_to,
        run_name=f"{run_id}-kd",
        eval_rows=kd_rows(val_rows, prompt_format, system) if val_rows else None,
        stop_token_id=stop,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    kd = student.kd
    share = result.info["on_policy_batches"] / max(1, result.steps * student.gradient_accumulation_steps)
    message = (
        f"KD from {spec.teacher.model} (lmbda {kd.lmbda:g}, beta {kd.beta:g}, T {kd.temperature:g}): "
        f"loss {result.first_loss:.4f} -> {result.final_loss:.4f} in {result.steps} steps, "
        f"{share:.0%} of batches sampled by the student"
    )
    ctx.log.info(message)
    if writer is not None:
        writer.add_event("info", "kd_done", message, job_id=ctx.job_id, run_id=run_id)
    return result
