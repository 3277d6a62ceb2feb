"""Resume a failed or cancelled train job from its run's last checkpoint.

A train job checkpoints into ``<run_dir>/checkpoints`` every ``student.save_steps`` steps
(model, optimizer, scheduler, RNG states and the step, via the Trainer's own checkpointing).
Resuming queues a *new* job row for the same run (the old row stays, as history); when that
job runs, it finds the checkpoint and continues from there, replaying exactly the batches an
uninterrupted run would have seen, so it ends on the same loss.

CLI: ``python -m engine resume <job_id|run_id>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.access import Actor, Right, check, done
from engine.store import Store
from engine.store.artifacts import Artifacts, ArtifactsError, artifacts, run_folder

CHECKPOINTS_DIR = "checkpoints"
"""Sub-folder of a run folder that holds the trainer's checkpoints."""
RESUMABLE = ("failed", "cancelled")
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
"""A checkpoint folder's name; the group is its step."""


class ResumeError(ValueError):
    """The job or run cannot be resumed; the message says why."""


def last_checkpoint(folder: str | Path) -> Path | None:
    """The newest *complete* checkpoint in ``folder`` (``None`` when there is none).

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without it was cut short
    (e.g. the process was killed while saving) and is skipped for the one before it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and (path / "trainer_state.json").is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer step a ``checkpoint-<step>`` folder was saved at."""
    match = CHECKPOINT_NAME.match(Path(checkpoint).name)
    if not match:
        raise ValueError(f"{checkpoint} is not a checkpoint-<step> folder")
    return int(match.group(1))


def _latest_train_job(store: Store, run_id: str) -> dict | None:
    run = store.get_run(run_id)
    if run is None:
        return None
    jobs = [j for j in store.list_jobs(experiment_id=run["experiment_id"]) if j["run_id"] == run_id]
    jobs = [j for j in jobs if j["kind"] == "train"]
    return jobs[0] if jobs else None  # list_jobs is newest first


def resumable(job_rows: list[dict]) -> list[dict]:
    """The train jobs among ``job_rows`` that :func:`resume_job` would accept, newest first:
    failed or cancelled, and the latest train job of their run."""
    latest: dict[str, dict] = {}
    for job in sorted(job_rows, key=lambda j: (j["created_at"], j["id"])):
        if job["kind"] == "train" and job.get("run_id"):
            latest[job["run_id"]] = job
    found = [j for j in latest.values() if j["status"] in RESUMABLE]
    return sorted(found, key=lambda j: (j["created_at"], j["id"]), reverse=True)


def resume_job(store: Store, job_or_run_id: str, *, actor: Actor) -> str:
    """Queue a new train job that continues a failed or cancelled one from its last checkpoint.

    Args:
        store: The workspace.
        job_or_run_id: A train job's id, or a run's id (its latest train job is resumed).

    Returns:
        The new job's id. Its spec, experiment and run are the old job's; it depends on nothing.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        ResumeError: Unknown id, not a train job, still active, already succeeded, or the run
            already has a newer job queued or running.
    """
    check(store, actor, Right.LAUNCH, "resume jobs", job_or_run_id)
    job = store.get_job(job_or_run_id) or _latest_train_job(store, job_or_run_id)
    if job is None:
        raise ResumeError(f"no job or run {job_or_run_id}")
    if job["kind"] != "train" or not job.get("run_id"):
        raise ResumeError(f"job {job['id']} is a {job['kind']} job: only train jobs can be resumed")
    if job["status"] not in RESUMABLE:
        raise ResumeError(f"job {job['id']} is {job['status']}: only failed or cancelled jobs can be resumed")
    run_id = str(job["run_id"])
    newer = _latest_train_job(store, run_id)
    if newer is not None and newer["id"] != job["id"]:
        raise ResumeError(f"run {run_id} already has a newer job {newer['id']} ({newer['status']})")
    with store.tx() as conn:
        new_id = store.add_job(
            conn, "train", job["spec"], experiment_id=job["experiment_id"], depends_on=[], run_id=run_id
        )
        store.link_run_job(conn, run_id, new_id)
    run = store.get_run(run_id)
    name = _checkpoint_name(store, run_folder(store, run) / CHECKPOINTS_DIR) if run else None
    where = f"from {name}" if name else "from the start (no checkpoint was saved)"
    store.add_event(
        "info", "resumed", f"resume of {job['id']} queued as {new_id}, {where}", job_id=new_id, run_id=run_id
    )
    done(store, actor, "resume", job["id"], job=new_id, run=run_id)
    return new_id


def _checkpoint_name(store: Store, ckpt_dir: Path) -> str | None:
    """The checkpoint a resume will start from: the newest here or uploaded by the machine
    that trained the run (for the event's message only: an unreachable store is not an error)."""
    here = last_checkpoint(ckpt_dir)
    found = [here.name] if here else []
    try:
        remote = remote_last_checkpoint(artifacts(store), ckpt_dir)
    except ArtifactsError:
        remote = None
    found += [remote] if remote else []
    return max(found, key=checkpoint_step) if found else None


def remote_last_checkpoint(arts: Artifacts, folder: str | Path) -> str | None:
    """The name of the newest complete checkpoint in ``folder``'s remote copy (``None``: none,
    or no remote copy). Complete means its ``trainer_state.json``, uploaded last, is there."""
    found = []
    for name, files in arts.names(folder).items():
        match = CHECKPOINT_NAME.match(name)
        if match and "trainer_state.json" in files:
            found.append((int(match.group(1)), name))
    return max(found)[1] if found else None


def pull_last_checkpoint(arts: Artifacts, folder: str | Path) -> Path | None:
    """Download the remote copy's newest complete checkpoint into ``folder`` unless this machine
    has it or a newer one (so a run resumes on any machine); returns :func:`last_checkpoint`."""
    name = remote_last_checkpoint(arts, folder)
    here = last_checkpoint(folder)
    if name is not None and (here is None or checkpoint_step(here) < checkpoint_step(name)):
        arts.pull(Path(folder) / name, last=("trainer_state.json",))
    return last_checkpoint(folder)
