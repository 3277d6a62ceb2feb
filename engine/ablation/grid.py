"""The grid of an ablation: launch it, grow it, and say how it stands.

One experiment = a teacher job (data + teacher answers for every prompt) followed by one
training run per (train size, seed), plus the untrained student (size 0) when
``ablation.zero_shot``; with ``ablation.vary``, all of that once per varied value. Sizes are
nested subsets of one shuffled pool, so the curve isolates the value of *more* data. All runs
are scored on the same frozen test split. The curve itself is read back by
:mod:`engine.ablation.curve`.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from engine.access import Actor, Right, check, done
from engine.specs import ExperimentSpec
from engine.store import Store


def check_workspace(store: Store, spec: ExperimentSpec) -> None:
    """Refuse, before any (paid) teacher call, names the workspace does not know.

    A misspelt ``data.dataset`` would fail the teacher job; a misspelt ``curation.judge``
    (with ``judge_missing: drop``) would drop every teacher answer after they were paid for;
    a key variable the server did not declare, or a model folder outside the model roots
    (:mod:`engine.training.model_refs`), would be refused by the worker anyway.

    Raises:
        engine.specs.SpecError: the message names the field and what the workspace has.
    """
    from engine.data.datasets import find_dataset
    from engine.specs import SpecError
    from engine.teacher.keys import check_spec_keys
    from engine.training.model_refs import check_spec_models

    check_spec_keys(spec)
    check_spec_models(store, spec)
    if spec.data.source == "dataset" and spec.data.dataset:
        try:
            dataset = find_dataset(store, spec.data.dataset)
        except ValueError as err:
            raise SpecError(str(err)) from None
        check_sizes(spec, len(store.get_examples(dataset["id"], "train")), f"dataset {dataset['name']!r}")
    check_recipes(store, spec)
    if spec.ablation.versus_teacher and spec.teacher.kind == "local":
        raise SpecError(
            "ablation.versus_teacher: a local teacher cannot judge yet; judge runs from "
            "Judge calibration → Head to head with an endpoint instead"
        )
    judge = spec.curation.judge
    if judge and judge not in (names := store.judge_names()):
        known = ", ".join(names) or "none yet"
        raise SpecError(
            f"curation.judge: no judge named {judge!r} has verdicts in this workspace (judges: {known}); "
            "run it on the teacher answers first (Judge calibration), or fix the name"
        )


def check_recipes(store: Store, spec: ExperimentSpec) -> None:
    """Refuse recipes the workspace cannot run, before anything is queued: KD from a teacher
    that is not a local model folder, or that does not share a (non-tiny) student's tokenizer;
    ``gold`` on a dataset with too few reference answers.

    Only folders under the model roots are looked at (:mod:`engine.training.model_refs`):
    whether any other folder exists is never said.

    Raises:
        engine.specs.SpecError: naming the field (``teacher.model``, ``ablation.train_sizes``).
    """
    from pathlib import Path

    from engine.data.datasets import find_dataset
    from engine.specs import SpecError
    from engine.training.model_refs import resolve_model_ref

    for _, cell in spec.variant_specs():
        student, teacher = cell.student, cell.teacher
        if student.uses_kd:
            teacher_ref = resolve_model_ref(store, teacher.model, "teacher.model")
            if not Path(teacher_ref).is_dir():
                raise SpecError(
                    f"teacher.model: student.recipe {student.recipe} distils a local model folder; "
                    f"{teacher.model!r} is not a folder here"
                )
            if student.model != "tiny":  # the tiny student is built with the teacher's tokenizer
                from transformers import AutoTokenizer

                from engine.training.kd import require_shared_tokenizer

                student_ref = resolve_model_ref(store, student.model, "student.model")
                try:
                    student_tok = AutoTokenizer.from_pretrained(student_ref, revision=student.revision)
                except (OSError, ValueError):
                    continue  # not loadable here (e.g. offline): the train job checks again
                teacher_tok = AutoTokenizer.from_pretrained(teacher_ref)
                require_shared_tokenizer(student_tok, teacher_tok, teacher.model)
        if student.effective_recipe == "gold" and cell.data.source == "dataset" and cell.data.dataset:
            try:
                dataset = find_dataset(store, cell.data.dataset)
            except ValueError:
                continue  # check_workspace names it
            train = store.get_examples(dataset["id"], "train")
            refs = sum(1 for ex in train if (ex["reference"] or "").strip())
            where = f"dataset {dataset['name']!r} (reference answers, for student.recipe: gold)"
            check_sizes(cell, refs, where)


def check_sizes(spec: ExperimentSpec, pool: int, where: str) -> None:
    """Refuse train sizes the pool cannot fill: a run labelled 500 must not train on 54.

    Raises:
        engine.specs.SpecError: naming ``ablation.train_sizes``, the sizes and the pool.
    """
    from engine.specs import SpecError

    too_big = [n for n in spec.ablation.train_sizes if n > pool]
    if too_big:
        raise SpecError(
            f"ablation.train_sizes: {too_big} exceed the {pool} training examples of {where}; "
            f"use sizes up to {pool}"
        )


def launch_experiment(store: Store, spec: ExperimentSpec, *, actor: Actor) -> str:
    """Queue an experiment: the teacher job(s), then one train job per cell (size, seed and
    value of ``ablation.vary``), each followed by a pairwise comparison with the teacher when
    ``ablation.versus_teacher``.

    One teacher job answers for every value that shares a teacher (the usual case: only the
    student varies); a varied teacher setting gets one teacher job per distinct teacher.
    Everything is written in one transaction, so a launch is either fully queued or not at all.
    Returns the experiment id.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        engine.specs.SpecError: the spec names a dataset, judge or teacher this workspace does
            not have (see :func:`check_workspace`); nothing is queued.
    """
    check(store, actor, Right.LAUNCH, "launch experiments", spec.name)
    check_workspace(store, spec)
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec.model_dump(mode="json"), spec.fingerprint())
        runs = add_cells(
            store, conn, spec, exp_id, add_teacher_jobs(store, conn, spec, exp_id), grid_cells(spec)
        )
    done(store, actor, "launch", exp_id, name=spec.name, runs=len(runs))
    return exp_id


def add_teacher_jobs(store: Store, conn: Any, spec: ExperimentSpec, exp_id: str) -> dict[str, str]:
    """Queue one teacher job per distinct teacher of the spec's values; ``{teacher_key: job id}``.

    When the teacher does not vary, the one job carries the experiment's own spec (all values
    share its answers); a varied teacher's jobs carry the spec resolved for that teacher.
    """
    resolved = [r for _, r in spec.variant_specs()]
    keys = {r.teacher_key() for r in resolved}
    if len(keys) == 1:
        return {keys.pop(): _teacher_job(store, conn, spec, exp_id)}
    jobs: dict[str, str] = {}
    for r in resolved:
        if (key := r.teacher_key()) not in jobs:
            jobs[key] = _teacher_job(store, conn, r, exp_id)
    return jobs


def _teacher_job(store: Store, conn: Any, spec: ExperimentSpec, exp_id: str) -> str:
    return store.add_job(conn, "teacher", {"experiment": spec.model_dump(mode="json")}, experiment_id=exp_id)


class Cell(NamedTuple):
    """One run of the grid: train size (0: the untrained student), seed, and the value of
    ``ablation.vary`` as :func:`engine.specs.variant_key` text (None when nothing varies)."""

    size: int
    seed: int
    variant: str | None = None


def grid_cells(spec: ExperimentSpec) -> list[Cell]:
    """Every cell of a spec's grid: sizes x seeds x values of ``ablation.vary``, plus the
    untrained student (size 0, first seed) once per value when ``ablation.zero_shot``."""
    cells = []
    for variant, _ in spec.variant_specs():
        if spec.ablation.zero_shot:
            cells.append(Cell(0, spec.ablation.seeds[0], variant))
        cells += [Cell(n, seed, variant) for n in spec.ablation.train_sizes for seed in spec.ablation.seeds]
    return sorted(cells, key=lambda c: (c.size, c.seed, c.variant or ""))


def add_cells(
    store: Store,
    conn: Any,
    spec: ExperimentSpec,
    exp_id: str,
    teacher_jobs: str | dict[str, str],
    cells: list[Cell] | list[tuple[int, int]],
) -> list[str]:
    """Queue one run and train job per cell, inside ``conn``'s transaction; with
    ``ablation.versus_teacher`` each is followed by a pairwise job.

    Args:
        teacher_jobs: The teacher job every train job waits for, or one per teacher
            (``{teacher_key: job id}``, see :meth:`engine.specs.ExperimentSpec.teacher_key`).

    A cell's train job carries the spec resolved for its value of ``ablation.vary`` (what it
    trains with, and what its run folder records) and that value as ``variant``.
    """
    resolved = dict(spec.variant_specs())
    run_ids = []
    for cell in cells:
        size, seed, variant = Cell(*cell)  # a (size, seed) pair is a cell that varies nothing
        cell_spec = resolved[variant]
        teacher_job = teacher_jobs if isinstance(teacher_jobs, str) else teacher_jobs[cell_spec.teacher_key()]
        run_id = store.add_run(conn, exp_id, size, seed, variant_value=variant)
        job_spec: dict[str, Any] = {
            "experiment": cell_spec.model_dump(mode="json"),
            "train_size": size,
            "seed": seed,
        }
        if variant is not None:
            job_spec["variant"] = {"path": spec.vary_path(), "value": json.loads(variant)}
        job_id = store.add_job(
            conn, "train", job_spec, experiment_id=exp_id, depends_on=[teacher_job], run_id=run_id
        )
        store.link_run_job(conn, run_id, job_id)
        run_ids.append(run_id)
        if spec.ablation.versus_teacher:
            from engine.judges.pairwise import JOB_KIND, versus_teacher_spec

            store.add_job(
                conn,
                JOB_KIND,
                versus_teacher_spec(cell_spec, exp_id, run_id),
                experiment_id=exp_id,
                depends_on=[job_id],
            )
    return run_ids


def current_jobs(job_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs that stand for an experiment now: for each run, only its newest job of a kind.

    A resumed run has a failed (or cancelled) job and the job that finished it; only the
    latter says how the run stands.
    """
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    rest = []
    for job in sorted(job_rows, key=lambda j: (j["created_at"], j["id"])):
        if job.get("run_id"):
            newest[(job["kind"], job["run_id"])] = job
        else:
            rest.append(job)
    return sorted([*rest, *newest.values()], key=lambda j: (j["created_at"], j["id"]))


def experiment_status(store: Store, experiment_id: str) -> str:
    """Overall status: running while any job is active, else failed/cancelled/succeeded.

    Only each run's newest job counts (see :func:`current_jobs`).
    """
    statuses = {j["status"] for j in current_jobs(store.list_jobs(experiment_id=experiment_id))}
    if statuses & {"queued", "running"}:
        return "running" if "running" in statuses else "queued"
    for s in ("failed", "cancelled"):
        if s in statuses:
            return s
    return "succeeded" if statuses else "empty"
