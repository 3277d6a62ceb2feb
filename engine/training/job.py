"""Train job: one SFT run of an ablation cell (train size x seed), then its evaluation.

Run by a worker as ``main(ctx)`` with ``ctx.spec = {"experiment": <ExperimentSpec dict>,
"train_size": int, "seed": int}`` and a job row carrying ``experiment_id`` and ``run_id``
(the run row exists already). By hand: ``python -m engine worker`` picks it from the queue.

Steps: pick the first ``train_size`` examples of the experiment's shuffled train pool
(one pool order for every size and seed, so sizes are nested subsets and curves compare
like with like) -> load the student (the experiment's shared tiny base, a Hub id, or a
local folder) -> SFT on the teacher's answers -> save model, ``spec.json`` and
``metadata.json`` into the run folder -> greedy answers on the frozen test split, scored
against the references -> per-example outputs and aggregate metrics into the store.

``student.recipe`` picks the stages: ``gold`` is SFT on the dataset's reference answers
(:func:`gold_pool`; no teacher answer is read), ``sft`` SFT on the teacher's answers,
``sft+dpo`` (or ``student.dpo.enabled``) adds a DPO stage (:mod:`engine.training.dpo_stage`),
``kd`` distils a local teacher token by token instead of SFT, ``sft+kd`` after it
(:mod:`engine.training.kd_stage`). A cell of an experiment that varies a setting
(``ablation.vary``) gets the spec resolved for its value: it trains exactly as a plain
experiment with that value would.
SFT checkpoints into ``<run_dir>/checkpoints``; a re-run of the run (``python -m engine
resume``) continues from the newest one, and they are deleted once the run succeeds. With
``SENSEI_ARTIFACTS`` (:mod:`engine.store.artifacts`) each checkpoint is uploaded as it is
saved and the model with its records once trained, so the re-run may happen on any machine. Loss
spikes and out-of-memory errors become run events (:mod:`engine.training.health`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from engine.context import JobContext
from engine.judges.curation import curate
from engine.scoring.metrics import aggregate, score
from engine.specs import ExperimentSpec, parse_spec
from engine.store.artifacts import ArtifactsError, artifacts, push_run, run_folder
from engine.training.dpo_stage import DPO_SPAN, run_dpo_stage
from engine.training.formats import (
    example_length,
    generation_options,
    generation_prompts,
    resolve_prompt_format,
    set_stop_tokens,
    sft_rows,
)
from engine.training.generate import generate
from engine.training.health import HealthCallback, is_main_process, oom_guard
from engine.training.kd_stage import run_kd_stage
from engine.training.metadata import base_model_record, build_metadata, write_json
from engine.training.model_refs import resolve_model_ref
from engine.training.pools import gold_pool, tiny_base, training_pool
from engine.training.resume import CHECKPOINTS_DIR, checkpoint_step, last_checkpoint, pull_last_checkpoint
from engine.training.sft import StoreCallback, TrainResult, split_validation, train_sft
from engine.training.student import (
    causal_lm,
    device_precision,
    load_student,
    require_quantization_support,
    save_student,
)
from engine.training.uploads import CheckpointUploader, push_wandb

TRAIN_SPAN = (0.02, 0.85)
"""Share of the job's progress bar filled by training; evaluation fills the rest."""


def _event(ctx: JobContext, run_id: str, level: str, kind: str, message: str) -> None:
    ctx.log.log(30 if level == "warning" else 20, message)
    ctx.store.add_event(level, kind, message, job_id=ctx.job_id, run_id=run_id)


def _quiet_progress_bars() -> None:
    # Worker logs are for people: tqdm bars from datasets/transformers only add noise there.
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def main(ctx: JobContext) -> None:
    """Train and evaluate one run; see the module docstring."""
    _quiet_progress_bars()
    store = ctx.store
    spec = parse_spec(ctx.spec["experiment"], source="train job spec.experiment")
    train_size, seed = int(ctx.spec["train_size"]), int(ctx.spec["seed"])
    exp_id, run_id = str(ctx.job["experiment_id"]), str(ctx.job["run_id"])
    run = store.get_run(run_id)
    if run is None:
        raise RuntimeError(f"run {run_id} does not exist")
    arts = artifacts(store)  # a malformed SENSEI_ARTIFACTS fails here, before any work
    run_dir = run_folder(store, run)
    run_dir.mkdir(parents=True, exist_ok=True)
    if arts.remote:
        ctx.log.info("artifacts: %s (this machine's copy: %s)", arts.shown, run_dir)
    experiment = store.get_experiment(exp_id)
    dataset_id = experiment.get("dataset_id") if experiment else None
    if not dataset_id:
        raise RuntimeError(
            f"experiment {exp_id} has no dataset yet: its teacher job must finish before training"
        )
    dataset = store.get_dataset(dataset_id) or {}

    student = spec.student
    recipe = student.effective_recipe
    ctx.progress(0.0, "selecting training data", force=True)
    if recipe == "gold":  # the dataset's own answers: no teacher answer, so nothing to curate
        pool = gold_pool(store, dataset_id, spec)
        if not pool:
            raise RuntimeError(f"dataset {dataset_id}: no reference answers for student.recipe: gold")
    else:
        curation = curate(store, spec, dataset_id)
        if curation.active and is_main_process():
            _event(ctx, run_id, "info", "curation", curation.summary())
            write_json(run_dir / "curation.json", curation.to_json())
        pool = training_pool(store, dataset_id, spec, curation)
        if not pool:
            raise RuntimeError(f"dataset {dataset_id}: no usable teacher answers to train on")
    rows = pool[:train_size]
    if train_size and len(rows) < train_size:
        _event(
            ctx,
            run_id,
            "warning",
            "train_size_short",
            f"asked for {train_size} training examples, only {len(rows)} usable "
            f"{'reference' if recipe == 'gold' else 'teacher'} answers exist: training on all of them",
        )

    # Before any model is built or loaded: a QLoRA spec on a CPU machine fails with the reason.
    require_quantization_support(student.quantization)
    if student.model == "tiny":
        ctx.progress(0.01, "building the tiny base model", force=True)
        model_ref: str = str(tiny_base(store, exp_id, dataset_id, spec))
        base = {**base_model_record(model_ref, None), "tiny": student.tiny.model_dump()}
    else:
        # Checked again here, not only at launch: a crafted job row must not load any folder.
        model_ref = resolve_model_ref(store, student.model, "student.model")
        base = base_model_record(model_ref, student.revision)
    model, tokenizer = load_student(
        model_ref,
        student.revision,
        device="cpu" if student.gpus == 0 else None,
        quantization=student.quantization,
        gradient_checkpointing=student.gradient_checkpointing,
    )
    if base["kind"] == "hub":
        # The commit actually downloaded, so "main" today is reproducible tomorrow.
        base["commit"] = getattr(model.config, "_commit_hash", None)
    prompt_format = resolve_prompt_format(student.prompt_format, tokenizer, model_ref)
    _warn_if_truncated(ctx, run_id, tokenizer, rows, spec)

    # Under accelerate every rank trains, but only rank 0 writes files, rows and W&B.
    main_proc = is_main_process()
    variant = ctx.spec.get("variant")
    if main_proc:
        resolved: dict[str, Any] = {"experiment": spec.model_dump(mode="json"), "train_size": train_size}
        resolved |= {"seed": seed, **({"variant": variant} if variant else {})}
        write_json(run_dir / "spec.json", resolved)
    from engine.training import tracking

    report = tracking.report_to() if main_proc else []
    wandb_run = None
    if report:
        try:
            wandb_run = tracking.start_run(
                store.home,
                name=run_id,
                group=exp_id,
                tags=[f"n={train_size}", f"seed={seed}", f"recipe={recipe}"],
                config={"experiment": spec.model_dump(mode="json"), "train_size": train_size, "seed": seed},
            )
        except Exception as err:  # a broken tracker must never cost a training run
            _event(ctx, run_id, "warning", "wandb", f"W&B unavailable, continuing without it: {err}")
            report = []
    failed = True
    metrics: dict[str, float] = {}
    try:
        writer = store if main_proc else None
        two_stages = recipe in ("sft+dpo", "sft+kd")
        sft_span = (TRAIN_SPAN[0], DPO_SPAN[0]) if two_stages else TRAIN_SPAN
        callbacks = [
            StoreCallback(writer, ctx if main_proc else None, run_id, progress_span=sft_span),
            HealthCallback(writer, ctx.job_id, run_id),
        ]
        if arts.remote and main_proc:
            callbacks.append(CheckpointUploader(arts, lambda m: _event(ctx, run_id, "warning", "upload", m)))
        ckpt_dir = run_dir / CHECKPOINTS_DIR
        # An earlier attempt may have run on another machine: its last upload is the start.
        pull_last_checkpoint(arts, ckpt_dir)
        resume_from = _resume_point(ctx, run_id, ckpt_dir) if main_proc else last_checkpoint(ckpt_dir)
        zero_shot = train_size == 0
        dpo_alone = recipe == "sft+dpo" and not student.dpo.after_sft
        sft = not zero_shot and recipe != "kd" and not dpo_alone
        train_rows, val_rows = split_validation(rows, student, seed)
        with oom_guard(writer, ctx.job_id, run_id, student.batch_size):
            if sft:
                result = train_sft(
                    model,
                    tokenizer,
                    sft_rows(train_rows, prompt_format, spec.task.system_prompt),
                    student,
                    ckpt_dir,
                    seed,
                    callbacks=callbacks,
                    report_to=report,
                    run_name=run_id,
                    resume_from=resume_from,
                    eval_rows=sft_rows(val_rows, prompt_format, spec.task.system_prompt)
                    if val_rows
                    else None,
                )
                _event(ctx, run_id, "info", "stopped", _stop_sentence(result, len(train_rows), len(val_rows)))
            else:  # zero-shot, KD alone, or DPO alone: the student as loaded
                if dpo_alone and not zero_shot:
                    _event(ctx, run_id, "info", "sft_skipped", "DPO alone (student.dpo.after_sft: false)")
                result = TrainResult(model, 0.0, 0.0, 0.0, 0, 0, 0.0, 0.0, stop_reason="zero_shot")
            trained = result.model
            stages = [result] if sft else []
            if recipe == "sft+dpo" and not zero_shot:
                trained = run_dpo_stage(
                    ctx, run_id, spec, rows, trained, tokenizer, writer, result.steps, report, run_dir / "dpo"
                )
            if student.uses_kd and not zero_shot:
                kd_result = run_kd_stage(
                    ctx,
                    run_id,
                    spec,
                    train_rows,
                    val_rows,
                    trained,
                    tokenizer,
                    writer,
                    report,
                    run_dir / "kd",
                    prompt_format,
                    span=DPO_SPAN if sft else TRAIN_SPAN,
                    after_steps=result.steps if sft else 0,
                )
                trained = kd_result.model
                stages.append(kd_result)
        if not main_proc:
            failed = False
            return
        ctx.progress(TRAIN_SPAN[1], "saving the model", force=True)
        set_stop_tokens(causal_lm(trained), tokenizer, prompt_format)
        save_student(trained, tokenizer, run_dir / "model")
        first = stages[0] if stages else result  # the first training stage (SFT, or KD alone)
        train_info: dict[str, Any] = {
            "recipe": recipe,
            "sft": sft,
            "final_loss": first.final_loss,
            "first_loss": first.first_loss,
            "mean_loss": first.mean_loss,
            "steps": first.steps,
            "tokens_seen": first.tokens_seen,
            "wall_time_s": round(first.wall_time_s, 3),
            "tokens_per_s": round(first.tokens_per_s, 1),
            "budget": student.budget,
            "epochs": first.epochs,
            "stop_reason": first.stop_reason,
            "best_step": first.best_step,
            "best_eval_loss": first.best_eval_loss,
            "n_train": len(train_rows),
            "n_val": len(val_rows),
        }
        if student.uses_kd and stages:
            train_info["kd"] = _stage_record(stages[-1])
        write_json(
            run_dir / "metadata.json",
            build_metadata(
                base=base,
                lora=student.lora.model_dump(mode="json") if student.lora.enabled else None,
                dataset_id=dataset_id,
                dataset_hash=str(dataset.get("content_hash")),
                teacher_key=None if recipe == "gold" else spec.teacher_key(),  # gold: no teacher answer
                train_indices=[r["idx"] for r in rows],
                train_size=train_size,
                seed=seed,
                train=train_info,
                extra={
                    "run_id": run_id,
                    "experiment_id": exp_id,
                    "data_seed": spec.data.seed,
                    # The full recipe (quantization, packing, ...) and the precision it resolved to.
                    "student": student.model_dump(mode="json"),
                    "precision": device_precision(student),
                    # How to prompt it: raw text, or chat messages through its template.
                    "prompt_format": prompt_format,
                    "system_prompt": spec.task.system_prompt,
                },
            ),
        )

        if arts.remote:
            ctx.progress(TRAIN_SPAN[1], f"uploading the model to {arts.shown}", force=True)
            push_run(store, run_dir)
        metrics = evaluate_run(ctx, run_id, spec, dataset_id, trained, tokenizer, wandb_run)
        metrics["n_train"] = float(len(train_rows))
        if stages:
            metrics.update(_train_metrics(stages), n_val=float(len(val_rows)))
        store.set_run_metrics(run_id, metrics)
        # The final model is saved: checkpoints (optimizer state included) are dead weight now.
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        try:
            arts.remove(ckpt_dir)
        except ArtifactsError as err:  # the run is done; leftovers only cost storage
            _event(ctx, run_id, "warning", "upload", f"uploaded checkpoints were not deleted: {err}")
        failed = False
    finally:
        tracking.finish_run(wandb_run, metrics, failed=failed)
        if wandb_run is not None and arts.remote:
            try:
                push_wandb(arts, store.home, run_id)
            except ArtifactsError as err:  # W&B files are a mirror: never worth a run
                _event(ctx, run_id, "warning", "wandb", f"the W&B files were not uploaded: {err}")
    if report:
        _log_curve_when_last(ctx, exp_id, run_id)
    ctx.progress(1.0, "done", force=True)


def _stage_record(result: TrainResult) -> dict[str, Any]:
    """What metadata.json keeps of a training stage."""
    return {
        "final_loss": result.final_loss,
        "first_loss": result.first_loss,
        "steps": result.steps,
        "tokens_seen": result.tokens_seen,
        "wall_time_s": round(result.wall_time_s, 3),
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        "best_step": result.best_step,
        **result.info,
    }


def _train_metrics(stages: list[TrainResult]) -> dict[str, float]:
    """A run's training metrics over its stages (SFT, then KD): the last stage's loss, the
    time, tokens, steps and epochs of all, and the kept step on the run's step axis."""
    wall = sum(r.wall_time_s for r in stages)
    last = stages[-1]
    return {
        "train_loss": last.final_loss,
        "train_time_s": wall,
        "tokens_per_s": sum(r.tokens_seen for r in stages) / wall if wall > 0 else 0.0,
        "train_steps": float(sum(r.steps for r in stages)),
        "train_epochs": sum(r.epochs for r in stages),
        "best_step": float(sum(r.steps for r in stages[:-1]) + last.best_step),
    }


def _log_curve_when_last(ctx: JobContext, exp_id: str, run_id: str) -> None:
    """The last train job of an experiment to finish logs its curve to W&B (table + line plot)."""
    others = [
        j
        for j in ctx.store.list_jobs(experiment_id=exp_id)
        if j["kind"] == "train" and j["id"] != ctx.job_id and j["status"] in ("queued", "running")
    ]
    if others:
        return
    from engine.ablation.report import log_curve

    try:
        log_curve(ctx.store, exp_id)
    except Exception as err:  # a broken tracker must never fail a finished run
        _event(ctx, run_id, "warning", "wandb", f"the curve was not logged to W&B: {err}")


def _stop_sentence(result: TrainResult, n_train: int, n_val: int) -> str:
    """One line for the run's events: how long it trained and why it stopped."""
    why = {
        "early_stop": "validation loss stopped improving",
        "max_steps": "reached student.max_steps before the validation loss stopped improving",
        "epochs": "the epochs budget ran out",
        "steps": "the steps budget ran out",
    }.get(result.stop_reason, result.stop_reason)
    kept = f"; kept step {result.best_step}" if result.best_eval_loss is not None else ""
    val = f" (validated on {n_val} held out)" if n_val else ""
    return f"trained {result.steps} steps = {result.epochs:g} epochs of {n_train} examples{val}: {why}{kept}"


def evaluate_run(
    ctx: JobContext,
    run_id: str,
    spec: ExperimentSpec,
    dataset_id: str,
    model: Any,
    tokenizer: Any,
    wandb_run: Any | None = None,
) -> dict[str, float]:
    """Answer the test split greedily, score each answer, save the outputs; return the means.

    The reference is the example's gold answer when the dataset has one, else the teacher's
    answer (then the score measures agreement with the teacher, not correctness). With an
    active W&B run, a table of sample generations is logged too.
    """
    store = ctx.store
    test = store.get_examples(dataset_id, "test")
    answers = store.get_teacher_responses(dataset_id, spec.teacher_key())
    span = 1.0 - TRAIN_SPAN[1]

    def on_batch(done: int, total: int) -> None:
        ctx.progress(TRAIN_SPAN[1] + span * done / total, f"evaluating {done}/{total}")

    start = time.perf_counter()
    prompt_format = resolve_prompt_format(spec.student.prompt_format, tokenizer)
    outputs = generate(
        model,
        tokenizer,
        generation_prompts(tokenizer, [ex["prompt"] for ex in test], prompt_format, spec.task.system_prompt),
        spec.student.max_new_tokens,
        spec.student.eval_batch_size,
        on_batch=on_batch,
        **generation_options(tokenizer, prompt_format, causal_lm(model)),
    )
    rows, scores = [], []
    for ex, output in zip(test, outputs, strict=True):
        reference = ex.get("reference") or (answers.get(ex["idx"]) or {}).get("output")
        row_scores = score(spec.task, output, reference) if reference is not None else {}
        if row_scores:
            scores.append(row_scores)
        rows.append(
            {
                "idx": ex["idx"],
                "prompt": ex["prompt"],
                "output": output,
                "reference": reference,
                "scores": row_scores,
            }
        )
    store.save_outputs(run_id, rows)
    from engine.training.tracking import log_generations

    log_generations(wandb_run, rows)
    metrics = aggregate(scores)
    metrics["eval_time_s"] = time.perf_counter() - start
    return metrics


def _warn_if_truncated(
    ctx: JobContext, run_id: str, tokenizer: Any, rows: list[dict[str, Any]], spec: ExperimentSpec
) -> None:
    """Record an event when examples exceed ``max_length``: their answers would be cut short."""
    max_length = spec.student.max_length
    fmt = resolve_prompt_format(spec.student.prompt_format, tokenizer)
    lengths = [example_length(tokenizer, r, fmt, spec.task.system_prompt) for r in rows]
    over = sum(n > max_length for n in lengths)
    if over:
        _event(
            ctx,
            run_id,
            "warning",
            "truncated",
            f"{over} of {len(rows)} training examples exceed student.max_length={max_length} tokens "
            f"(longest {max(lengths)}) and lose the end of their answer; raise student.max_length",
        )


def _resume_point(ctx: JobContext, run_id: str, ckpt_dir: Path) -> Path | None:
    """The checkpoint to continue from, if an earlier attempt of this run left one.

    Metric points logged after it are dropped: the resumed run logs those steps again.
    """
    ckpt = last_checkpoint(ckpt_dir)
    if ckpt is None:
        ctx.store.delete_metrics_after(run_id, -1)  # a retry without checkpoints starts over
        return None
    step = checkpoint_step(ckpt)
    ctx.store.delete_metrics_after(run_id, step)
    _event(ctx, run_id, "info", "resumed", f"resuming training from {ckpt.name} (step {step})")
    return ckpt
