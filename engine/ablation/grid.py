"""The grid of an ablation: launch it, grow it, and say how it stands.

One experiment = a teacher job (data + teacher answers for every prompt) followed by one
training run per (train size, seed), plus the untrained student (size 0) when
``ablation.zero_shot``. Sizes are nested subsets of one shuffled pool, so the curve isolates
the value of *more* data. All runs are scored on the same frozen test split. The curve itself
is read back by :mod:`engine.ablation.curve`.
"""

from __future__ import annotations

from typing import Any

from engine.specs import ExperimentSpec
from engine.store import Store


def check_workspace(store: Store, spec: ExperimentSpec) -> None:
    """Refuse, before any (paid) teacher call, names the workspace does not know.

    A misspelt ``data.dataset`` would fail the teacher job; a misspelt ``curation.judge``
    (with ``judge_missing: drop``) would drop every teacher answer after they were paid for.

    Raises:
        engine.specs.SpecError: the message names the field and what the workspace has.
    """
    from engine.data.datasets import find_dataset
    from engine.specs import SpecError

    if spec.data.source == "dataset" and spec.data.dataset:
        try:
            dataset = find_dataset(store, spec.data.dataset)
        except ValueError as err:
            raise SpecError(str(err)) from None
        check_sizes(spec, len(store.get_examples(dataset["id"], "train")), f"dataset {dataset['name']!r}")
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


def launch_experiment(store: Store, spec: ExperimentSpec) -> str:
    """Queue an experiment: one teacher job, then one train job per (size, seed), each followed
    by a pairwise comparison with the teacher when ``ablation.versus_teacher``.

    Everything is written in one transaction, so a launch is either fully queued or not at all.
    Returns the experiment id.

    Raises:
        engine.specs.SpecError: the spec names a dataset or judge this workspace does not
            have (see :func:`check_workspace`); nothing is queued.
    """
    check_workspace(store, spec)
    spec_dict = spec.model_dump(mode="json")
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec_dict, spec.fingerprint())
        teacher = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
        add_cells(store, conn, spec, exp_id, teacher, grid_cells(spec))
    return exp_id


def grid_cells(spec: ExperimentSpec) -> list[tuple[int, int]]:
    """Every (train size, seed) of a spec's grid; size 0 is the untrained student."""
    cells = [(0, spec.ablation.seeds[0])] if spec.ablation.zero_shot else []
    return cells + [(n, seed) for n in spec.ablation.train_sizes for seed in spec.ablation.seeds]


def add_cells(
    store: Store,
    conn: Any,
    spec: ExperimentSpec,
    exp_id: str,
    teacher_job: str,
    cells: list[tuple[int, int]],
) -> list[str]:
    """Queue one run and train job per cell (each after the teacher job), inside ``conn``'s
    transaction; with ``ablation.versus_teacher`` each is followed by a pairwise job."""
    spec_dict = spec.model_dump(mode="json")
    run_ids = []
    for size, seed in cells:
        run_id = store.add_run(conn, exp_id, size, seed)
        job_id = store.add_job(
            conn,
            "train",
            {"experiment": spec_dict, "train_size": size, "seed": seed},
            experiment_id=exp_id,
            depends_on=[teacher_job],
            run_id=run_id,
        )
        store.link_run_job(conn, run_id, job_id)
        run_ids.append(run_id)
        if spec.ablation.versus_teacher:
            from engine.judges.pairwise import JOB_KIND, versus_teacher_spec

            store.add_job(
                conn,
                JOB_KIND,
                versus_teacher_spec(spec, exp_id, run_id),
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
