"""Scheduler and workers as real subprocesses (sleep jobs: no models involved)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import jobs
from engine.store import TERMINAL, Store
from tests.actors import ADMIN

pytestmark = pytest.mark.usefixtures("cleanup_processes")


def _wait_for(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start_scheduler(store: Store) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "--home", str(store.home), "scheduler"],
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _status(store: Store, job_id: str) -> str:
    return store.get_job(job_id)["status"]


@pytest.mark.both_backends
def test_job_runs_to_success_with_progress_and_log(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 0.5})
    sched = _start_scheduler(store)
    _wait_for(lambda: _status(store, job_id) == "succeeded", what="success")
    job = store.get_job(job_id)
    assert job["progress"] == 1.0 and job["pid"] and job["started_at"] <= job["finished_at"]
    assert job["message"].startswith("slept 5/5")  # the job's own last word, not a generic "done"
    _wait_for(lambda: store.get_job(job_id)["exit_code"] == 0, what="exit code")
    assert "succeeded" in Path(job["log_path"]).read_text()
    sched.terminate()
    sched.wait(10)


def test_failing_job_records_reason(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 0.1, "fail": True})
    dependent = store.enqueue("sleep", {"seconds": 0.1}, depends_on=[job_id])
    _start_scheduler(store)
    _wait_for(lambda: _status(store, dependent) in TERMINAL, what="dependent finished")
    assert _status(store, job_id) == "failed"
    assert "asked to fail" in store.get_job(job_id)["error"]
    assert _status(store, dependent) == "cancelled"
    assert job_id in store.get_job(dependent)["error"]


@pytest.mark.both_backends
def test_sigkilled_worker_is_marked_failed_and_log_kept(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 60})
    _start_scheduler(store)
    _wait_for(lambda: store.get_job(job_id)["progress"] > 0, what="progress")
    job = store.get_job(job_id)
    os.kill(job["pid"], signal.SIGKILL)
    _wait_for(lambda: _status(store, job_id) == "failed", what="failed")
    job = store.get_job(job_id)
    assert "worker died" in job["error"] and "signal 9" in job["error"]
    assert "starting" in Path(job["log_path"]).read_text()  # the log survives the crash
    assert any(e["kind"] == "worker_died" for e in store.list_events(job_id=job_id))


def test_restarted_scheduler_reconciles_jobs_whose_worker_died(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 60})
    sched = _start_scheduler(store)
    _wait_for(lambda: store.get_job(job_id)["progress"] > 0, what="progress")
    # The scheduler dies first (SIGKILL: no chance to clean up), then the worker.
    os.killpg(sched.pid, signal.SIGKILL)
    sched.wait(10)
    os.killpg(store.get_job(job_id)["pid"], signal.SIGKILL)
    time.sleep(0.3)
    assert _status(store, job_id) == "running"  # nobody noticed yet
    _start_scheduler(store)
    _wait_for(lambda: _status(store, job_id) == "failed", what="reconciled")
    assert store.get_job(job_id)["error"] == "worker died"


def test_worker_survives_scheduler_exit(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 1.5})
    sched = _start_scheduler(store)
    _wait_for(lambda: _status(store, job_id) == "running", what="running")
    sched.terminate()
    sched.wait(10)
    _wait_for(lambda: _status(store, job_id) == "succeeded", what="success without scheduler")


@pytest.mark.both_backends
def test_cancel_running_job_stops_its_process_group(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 60})
    queued = store.enqueue("sleep", {"seconds": 60})
    _start_scheduler(store)
    _wait_for(lambda: store.get_job(job_id)["progress"] > 0, what="progress")
    job = store.get_job(job_id)
    assert jobs.cancel_job(store, job_id, actor=ADMIN)
    assert _status(store, job_id) == "cancelled"
    assert not jobs.process_alive(job["pid"], job["pid_started_at"])
    assert not jobs.cancel_job(store, job_id, actor=ADMIN)  # already finished
    assert jobs.cancel_job(store, queued, actor=ADMIN)
    assert _status(store, queued) == "cancelled"


def test_only_one_scheduler_per_workspace(store: Store) -> None:
    _start_scheduler(store)
    _wait_for(lambda: jobs.scheduler_running(store), what="first scheduler")
    second = _start_scheduler(store)
    assert second.wait(20) == 3
    assert not jobs.ensure_scheduler(store)


def test_concurrency_limit(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_MAX_JOBS", "2")
    ids = [store.enqueue("sleep", {"seconds": 1.0}) for _ in range(3)]
    _start_scheduler(store)
    seen_running = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(_status(store, i) == "succeeded" for i in ids):
        seen_running = max(seen_running, len(store.list_jobs(statuses=("running",))))
        time.sleep(0.05)
    assert all(_status(store, i) == "succeeded" for i in ids)
    assert seen_running == 2


def test_cpu_slots_default_to_the_cores_and_share_them_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SENSEI_MAX_JOBS, as many CPU jobs run at once as there are cores (up to 4), and
    each worker is told its share of the cores."""
    monkeypatch.delenv("SENSEI_MAX_JOBS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SENSEI_GPUS", "")
    cores = jobs.usable_cores()
    slots = jobs.max_concurrency()
    assert 1 <= slots <= min(cores, jobs.MAX_DEFAULT_CPU_JOBS)
    assert jobs.cpu_threads() == max(1, cores // slots)
    monkeypatch.setenv("SENSEI_MAX_JOBS", "1")
    assert jobs.max_concurrency() == 1 and jobs.cpu_threads() == cores

    monkeypatch.delenv("SENSEI_MAX_JOBS")
    first = store.enqueue("sleep", {"seconds": 0.3})
    _start_scheduler(store)
    _wait_for(lambda: _status(store, first) == "succeeded", what="the sleep job")
    assert store.get_job(first)["message"].endswith(f"threads {jobs.cpu_threads()}")


def test_a_thread_count_the_user_set_is_kept(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_GPUS", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    job = store.enqueue("sleep", {"seconds": 0.3})
    _start_scheduler(store)
    _wait_for(lambda: _status(store, job) == "succeeded", what="the sleep job")
    assert store.get_job(job)["message"].endswith("threads 7")


def test_gpu_slots_give_each_job_its_own_gpu(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_GPUS", "0,1")
    one = [store.enqueue("sleep", {"seconds": 1.5, "gpus": 1}) for _ in range(3)]
    cpu = store.enqueue("sleep", {"seconds": 0.5, "gpus": 0})
    too_big = store.enqueue("sleep", {"seconds": 0.1, "gpus": 3})
    _start_scheduler(store)
    seen: dict[str, str] = {}
    max_gpu_jobs = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not all(_status(store, i) in TERMINAL for i in [*one, cpu]):
        running = store.list_jobs(statuses=("running",))
        max_gpu_jobs = max(max_gpu_jobs, sum(1 for j in running if j["devices"]))
        assert len({d for j in running for d in j["devices"]}) == sum(len(j["devices"]) for j in running)
        for j in running:
            if "on gpus" in j["message"]:
                seen[j["id"]] = j["message"].split("on gpus ")[1].split(", threads")[0]
        time.sleep(0.05)
    assert all(_status(store, i) == "succeeded" for i in [*one, cpu])
    assert max_gpu_jobs == 2  # two GPUs, never more than two one-GPU jobs at once
    assert {seen[i] for i in one} <= {"[0]", "[1]"}
    assert seen[cpu] == "[]"  # a CPU job on a GPU machine sees no GPU
    failed = store.get_job(too_big)
    assert failed["status"] == "failed" and "needs 3 GPUs" in failed["error"]


def test_multi_gpu_jobs_launch_through_accelerate() -> None:
    from engine.devices import worker_command

    assert worker_command("job-1", "/ws", ["0"])[1:3] == ["-m", "engine"]
    cmd = worker_command("job-1", "/ws", ["0", "1"])
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert cmd[-5:] == ["engine", "worker", "job-1", "--home", "/ws"]


def test_scheduler_state_says_starting_until_the_lock_is_held(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    spawned: list[int] = []

    def fake_spawn(_store: Store, _idle: float) -> SimpleNamespace:
        spawned.append(1)
        return SimpleNamespace(pid=os.getpid())  # a live process that never takes the lock

    monkeypatch.setattr(jobs, "_spawn_scheduler", fake_spawn)
    assert jobs.scheduler_state(store) == "idle"
    assert jobs.ensure_scheduler(store) and jobs.scheduler_state(store) == "starting"
    assert not jobs.ensure_scheduler(store) and len(spawned) == 1  # a second click starts nothing
    later = time.time() + jobs.STARTING_GRACE_S + 1
    assert jobs.scheduler_state(store, now=later) == "idle"  # it never came up: idle again
    # The scheduler removes the mark once it holds the lock.
    assert jobs.run_scheduler(store, poll_s=0.01, idle_exit_s=0.0) == 0
    assert jobs.scheduler_state(store) == "idle" and len(spawned) == 1
    # A start whose process already died is idle at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setattr(jobs, "_spawn_scheduler", lambda _s, _i: dead)
    assert jobs.ensure_scheduler(store) and jobs.scheduler_state(store) == "idle"
