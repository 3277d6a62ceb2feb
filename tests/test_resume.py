"""Checkpoints and true resume: a SIGKILLed train job, resumed, ends exactly where an
uninterrupted one does; plus the resume rules (which jobs, which new row)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from engine import jobs
from engine.context import JobContext
from engine.specs import ExperimentSpec, TinyModelSpec, demo_spec
from engine.store import Store
from engine.training import job as train_job
from engine.training.metadata import read_metadata
from engine.training.resume import (
    CHECKPOINTS_DIR,
    ResumeError,
    checkpoint_step,
    last_checkpoint,
    resumable,
    resume_job,
)
from engine.training.sft import StoreCallback, checkpoint_train_time, mean_loss
from tests.actors import ADMIN
from tests.test_train_job import _setup


def _add_train_job(store: Store, spec_dict: dict, exp_id: str, size: int, seed: int) -> tuple[str, str]:
    job_spec = {"experiment": spec_dict, "train_size": size, "seed": seed}
    with store.tx() as conn:
        run_id = store.add_run(conn, exp_id, size, seed)
        job_id = store.add_job(conn, "train", job_spec, experiment_id=exp_id, run_id=run_id)
        store.link_run_job(conn, run_id, job_id)
    return run_id, job_id


def resumable_spec(
    max_steps: int, test_size: int = 10, num_layers: int = 2, max_new_tokens: int = 16
) -> ExperimentSpec:
    """A small demo experiment that checkpoints (and logs its loss) every 5 steps."""
    spec = demo_spec("fast")
    spec.data.test_size = test_size
    spec.student.tiny = TinyModelSpec(hidden_size=64, num_layers=num_layers, num_heads=4, vocab_size=384)
    spec.student.max_steps = max_steps
    spec.student.batch_size = 4
    spec.student.save_steps = 5
    spec.student.logging_steps = 5
    spec.student.max_new_tokens = max_new_tokens
    return spec


def _run_in_process(store: Store, job_id: str) -> None:
    job = store.get_job(job_id)
    assert job is not None
    train_job.main(JobContext(store=store, job=job, spec=job["spec"]))


def test_last_checkpoint_skips_incomplete(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    ckpt = last_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "checkpoint-20" and checkpoint_step(ckpt) == 20


def test_resume_rules(store: Store) -> None:
    spec = demo_spec("fast")
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 16, 0)
    with pytest.raises(ResumeError, match="only failed or cancelled"):
        resume_job(store, job_id, actor=ADMIN)
    store.finish_job(job_id, "failed", error="worker died")
    assert [j["id"] for j in resumable(store.list_jobs(experiment_id=exp_id))] == [job_id]

    new_id = resume_job(store, run_id, actor=ADMIN)  # a run id resumes its latest train job
    new = store.get_job(new_id)
    assert new is not None and new["status"] == "queued" and new["depends_on"] == []
    assert new["run_id"] == run_id and new["spec"] == store.get_job(job_id)["spec"]
    assert store.get_run(run_id)["job_id"] == new_id
    assert store.get_job(job_id)["status"] == "failed"  # the old row stays, as history
    assert resumable(store.list_jobs(experiment_id=exp_id)) == []
    with pytest.raises(ResumeError, match="newer job"):
        resume_job(store, job_id, actor=ADMIN)
    other = store.enqueue("sleep", {"seconds": 0})
    store.finish_job(other, "failed")
    with pytest.raises(ResumeError, match="only train jobs"):
        resume_job(store, other, actor=ADMIN)
    with pytest.raises(ResumeError, match="no job or run"):
        resume_job(store, "job-nope", actor=ADMIN)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(
    cleanup_processes: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cleanup_processes
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = resumable_spec(max_steps=20)
    exp_id, _ = _setup(store, spec)
    spec_dict = spec.model_dump(mode="json")

    # Interrupted: a real worker process, SIGKILLed once its first checkpoint is complete.
    run_id, job_id = _add_train_job(store, spec_dict, exp_id, 32, 0)
    proc = jobs.spawn_worker(store, store.get_job(job_id))
    assert proc is not None
    ckpt_dir = Path(store.get_run(run_id)["run_dir"]) / CHECKPOINTS_DIR
    deadline = time.monotonic() + 120
    while last_checkpoint(ckpt_dir) is None:
        assert proc.poll() is None, "the worker ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_step(last_checkpoint(ckpt_dir))
    assert killed_at < spec.student.max_steps
    assert jobs.reconcile(store) == [job_id]

    new_id = resume_job(store, job_id, actor=ADMIN)
    _run_in_process(store, new_id)
    resumed = store.get_run(run_id)
    kinds = [e["kind"] for e in store.list_events(run_id=run_id)]
    assert "resumed" in kinds and "worker_died" in kinds

    # Uninterrupted: same spec and seed, straight through.
    ref_id, ref_job = _add_train_job(store, spec_dict, exp_id, 32, 0)
    _run_in_process(store, ref_job)
    reference = store.get_run(ref_id)

    diff = abs(resumed["metrics"]["train_loss"] - reference["metrics"]["train_loss"])
    print(f"resumed from step {killed_at}: final loss diff {diff:.2e}")
    assert diff < 1e-4
    curve = [(p["step"], p["value"]) for p in store.metric_series([run_id], "loss")]
    ref_curve = [(p["step"], p["value"]) for p in store.metric_series([ref_id], "loss")]
    assert [s for s, _ in curve] == [s for s, _ in ref_curve] == list(range(5, 21, 5))
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(curve, ref_curve, strict=True))
    assert not ckpt_dir.exists()  # a finished run keeps its model, not its checkpoints


def test_cli_resume(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.__main__ import main

    monkeypatch.setattr(jobs, "ensure_scheduler", lambda store, **kw: False)
    spec = demo_spec("fast")
    exp_id, _ = _setup(store, spec)
    _, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 16, 0)
    home = ["--home", str(store.home)]
    assert main([*home, "resume", job_id]) == 2
    assert "only failed or cancelled" in capsys.readouterr().err
    store.finish_job(job_id, "cancelled")
    assert main([*home, "resume", job_id]) == 0
    new_id = capsys.readouterr().out.strip()
    assert store.get_job(new_id)["status"] == "queued"


@pytest.mark.slow
def test_failure_after_training_resumes_without_retraining(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = demo_spec("fast")
    spec.data.test_size = 5
    spec.student.tiny = TinyModelSpec(hidden_size=64, num_layers=1, num_heads=4, vocab_size=384)
    spec.student.max_steps = 4
    spec.student.save_steps = 2
    spec.student.max_new_tokens = 8
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 16, 0)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("evaluation crashed")

    with monkeypatch.context() as patch:
        patch.setattr(train_job, "evaluate_run", broken)
        with pytest.raises(RuntimeError, match="evaluation crashed"):
            _run_in_process(store, job_id)
    losses = store.metric_series([run_id], "loss")
    store.finish_job(job_id, "failed")
    _run_in_process(store, resume_job(store, job_id, actor=ADMIN))
    run = store.get_run(run_id)
    assert run["metrics"]["n"] == 5 and len(store.list_outputs(run_id)) == 5
    assert store.metric_series([run_id], "loss") == losses  # nothing retrained, nothing lost
    assert run["metrics"]["train_loss"] == pytest.approx(losses[-1]["value"])


@pytest.mark.slow
def test_a_resumed_runs_record_covers_the_whole_training(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metadata.json and the run metrics of a run interrupted after its step-10 checkpoint and
    resumed say what an uninterrupted run's say: first and mean loss, steps, tokens, and a
    training time that includes the attempt before the interruption."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = demo_spec("fast")
    spec.data.test_size = 5
    spec.student.tiny = TinyModelSpec(hidden_size=64, num_layers=1, num_heads=4, vocab_size=384)
    spec.student.max_steps = 20
    spec.student.batch_size = 4
    spec.student.save_steps = 5
    spec.student.logging_steps = 3  # checkpoints fall between logs: the record must still add up
    spec.student.max_new_tokens = 8
    exp_id, _ = _setup(store, spec)
    spec_dict = spec.model_dump(mode="json")

    def crash_at_step_13(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 13:
            raise RuntimeError("worker lost at step 13")

    run_id, job_id = _add_train_job(store, spec_dict, exp_id, 32, 0)
    with monkeypatch.context() as patch:
        patch.setattr(StoreCallback, "on_step_end", crash_at_step_13)
        with pytest.raises(RuntimeError, match="step 13"):
            _run_in_process(store, job_id)
    store.finish_job(job_id, "failed", error="worker lost")
    run_dir = Path(store.get_run(run_id)["run_dir"])
    ckpt = last_checkpoint(run_dir / CHECKPOINTS_DIR)
    assert ckpt is not None and checkpoint_step(ckpt) == 10
    before_resume = checkpoint_train_time(ckpt)  # what the first attempt spent up to step 10
    _run_in_process(store, resume_job(store, job_id, actor=ADMIN))

    ref_id, ref_job = _add_train_job(store, spec_dict, exp_id, 32, 0)
    _run_in_process(store, ref_job)

    resumed, reference = (read_metadata(run_dir)["train"], read_metadata(store.runs_dir / ref_id)["train"])
    assert resumed["first_loss"] == pytest.approx(reference["first_loss"], abs=1e-5)
    assert resumed["mean_loss"] == pytest.approx(reference["mean_loss"], abs=1e-4)
    assert resumed["final_loss"] == pytest.approx(reference["final_loss"], abs=1e-4)
    assert resumed["steps"] == reference["steps"] == 20
    assert resumed["tokens_seen"] == reference["tokens_seen"] > 0
    # Time: the first attempt's 10 steps plus the resumed 10, not the resumed stretch alone.
    assert before_resume > 0 and resumed["wall_time_s"] > before_resume
    assert resumed["tokens_per_s"] == pytest.approx(resumed["tokens_seen"] / resumed["wall_time_s"], rel=1e-3)
    metrics = store.get_run(run_id)["metrics"]
    assert metrics["train_time_s"] == pytest.approx(resumed["wall_time_s"], abs=1e-3)
    assert metrics["tokens_per_s"] == pytest.approx(resumed["tokens_per_s"], rel=1e-3)
    # The mean is the trainer's own training_loss for an uninterrupted run.
    assert reference["mean_loss"] == pytest.approx(
        mean_loss([(p["step"], p["value"]) for p in store.metric_series([ref_id], "loss")]), abs=1e-6
    )
