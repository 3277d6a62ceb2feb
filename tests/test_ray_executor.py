"""The Ray executor against a real local Ray head (127.0.0.1, two CPUs: two worker processes):
jobs run, report and cancel through Ray tasks, and a Ray worker killed mid-training fails its job
with its log kept; ``resume`` then finishes it with no row lost or duplicated."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from engine import jobs
from engine.store import Store
from engine.training.resume import CHECKPOINTS_DIR, checkpoint_step, last_checkpoint, resume_job
from tests.actors import ADMIN
from tests.loopback import free_port
from tests.test_resume import _add_train_job, resumable_spec
from tests.test_train_job import _setup

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def executor(ray_address: str, monkeypatch: pytest.MonkeyPatch) -> jobs.Executor:
    monkeypatch.setenv("SENSEI_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    return jobs.make_executor()


def _drive(
    store: Store, executor: jobs.Executor, children: dict, until: Callable[[], bool], poll_s: float = 0.2
) -> None:
    """Scheduler ticks until ``until()`` holds."""
    deadline = time.monotonic() + 240
    while not until():
        jobs.schedule_once(store, children, executor)
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll_s)


def _worker_processes(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "worker" in cmd and job_id in cmd and "engine" in cmd:
            found.append(proc)
    return found


def _gone(job_id: str) -> bool:
    return all(p.status() == psutil.STATUS_ZOMBIE for p in _worker_processes(job_id))


def test_an_unknown_executor_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="SENSEI_EXECUTOR='slurm'"):
        jobs.make_executor()


def test_an_unreachable_ray_head_stops_the_scheduler_at_once_and_says_why(
    cleanup_processes: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cleanup_processes
    port = free_port()  # nothing listens there (ray.init alone would retry it for minutes)
    monkeypatch.setenv("SENSEI_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    cmd = [sys.executable, "-m", "engine", "--home", str(store.home), "demo", "--preset", "fast"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    reason = f"RAY_ADDRESS=127.0.0.1:{port}: no Ray head answers there"
    assert proc.returncode == 1 and f"the scheduler cannot start: {reason}" in proc.stderr
    assert {j["status"] for j in store.list_jobs()} == {"queued"}  # nothing lost: they wait for a head
    assert reason in (jobs.scheduler_error(store) or "")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert any(reason in c.value and "Scheduler stopped" in c.value for c in at.sidebar.caption)


def test_a_ray_job_left_by_an_earlier_scheduler_is_reconciled_as_failed(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 60})
    assert store.mark_started(job_id, None, None, [])
    store.set_executor_ref(job_id, "ray:0123abcd")
    assert jobs.reconcile(store) == [job_id]  # a new scheduler: it holds no task for this job
    job = store.get_job(job_id)
    assert job["status"] == "failed" and "ray:0123abcd" in job["error"]
    assert "ended with the scheduler that submitted it" in job["error"]


def test_jobs_run_and_cancel_as_ray_tasks(store: Store, executor: jobs.Executor) -> None:
    quick = store.enqueue("sleep", {"seconds": 0.5})
    slow = store.enqueue("sleep", {"seconds": 120})
    children: dict = {}
    _drive(
        store,
        executor,
        children,
        lambda: store.get_job(quick)["status"] == "succeeded" and store.get_job(slow)["progress"] > 0,
    )
    done = store.get_job(quick)
    assert done["executor_ref"].startswith("ray:") and done["pid"] is None and done["exit_code"] == 0
    assert "threads 1" in done["message"]  # one CPU asked of Ray, one torch thread
    assert f"job {quick} (sleep) starting" in jobs.read_log(done)

    assert jobs.cancel_job(store, slow, actor=ADMIN)
    _drive(store, executor, children, lambda: slow not in children and _gone(slow))
    cancelled = store.get_job(slow)
    assert cancelled["status"] == "cancelled" and cancelled["error"] == "cancelled by tester"


def test_a_killed_ray_worker_fails_its_job_and_resume_finishes_it(
    store: Store, executor: jobs.Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = resumable_spec(max_steps=40)
    exp_id, _ = _setup(store, spec)
    run_id, job_id = _add_train_job(store, spec.model_dump(mode="json"), exp_id, 32, 0)
    ckpt_dir = Path(store.get_run(run_id)["run_dir"]) / CHECKPOINTS_DIR

    children: dict = {}
    _drive(store, executor, children, lambda: last_checkpoint(ckpt_dir) is not None, poll_s=0.05)
    [worker] = _worker_processes(job_id)
    ray_worker = worker.parent()
    assert ray_worker.cmdline()[0].startswith("ray::")  # the Ray worker process running the task
    ray_worker.send_signal(signal.SIGKILL)
    _drive(store, executor, children, lambda: store.get_job(job_id)["status"] != "running")
    killed_at = checkpoint_step(last_checkpoint(ckpt_dir))
    assert killed_at < spec.student.max_steps

    failed = store.get_job(job_id)
    assert failed["status"] == "failed" and "Ray worker process crashed or was killed" in failed["error"]
    log_text = jobs.read_log(failed)
    assert f"job {job_id} (train) starting" in log_text and failed["error"] in log_text  # the log is kept
    _drive(store, executor, children, lambda: _gone(job_id))  # no orphan keeps writing rows

    new_id = resume_job(store, job_id, actor=ADMIN)
    _drive(store, executor, children, lambda: store.get_job(new_id)["status"] not in ("queued", "running"))
    resumed = store.get_job(new_id)
    assert resumed["status"] == "succeeded", jobs.log_tail(resumed)
    assert resumed["executor_ref"].startswith("ray:") and resumed["executor_ref"] != failed["executor_ref"]

    # No row lost or duplicated: one run, its two jobs, each logged step once, one output per example.
    assert [r["id"] for r in store.list_runs(exp_id)] == [run_id]
    assert {j["id"]: j["status"] for j in store.list_jobs(experiment_id=exp_id)} == {
        job_id: "failed",
        new_id: "succeeded",
    }
    steps = [p["step"] for p in store.metric_series([run_id], "loss")]
    assert steps == list(range(5, spec.student.max_steps + 1, 5))
    assert len(store.list_outputs(run_id)) == spec.data.test_size
    events = store.list_events(run_id=run_id)
    assert [e["kind"] for e in events].count("worker_died") == 1
    assert any(e["kind"] == "resumed" and f"checkpoint-{killed_at}" in e["message"] for e in events)
