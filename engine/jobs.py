"""The job queue, the scheduler and the worker.

A job is a row in the store plus, while it runs, one ``python -m engine worker <job_id>``
process in its own process group (so cancel reaches everything it started, e.g. a local
teacher server). The scheduler is a single process per workspace (an exclusive ``flock`` on
``scheduler.lock``) that starts queued jobs whose dependencies succeeded, up to a concurrency
limit, and reconciles jobs whose worker is gone. Neither depends on the browser or the
Streamlit server: both are detached sessions and keep going when the app closes.

Status moves queued -> running -> succeeded | failed | cancelled. Only the first move to a
terminal status counts (``Store.finish_job``), so a worker finishing and a cancel or a
reconcile racing each other can never overwrite one another.

Where workers run is the scheduler's executor (``SENSEI_EXECUTOR``): subprocesses on this
machine (:class:`LocalExecutor`, the default) or one Ray task per job on a cluster
(:mod:`engine.ray_executor`). Either way the worker is the same process and reports through the
store and its log file.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

import psutil

from engine.access import Actor, Right, check, done
from engine.context import JobCancelled, JobContext
from engine.devices import assign, gpu_slots, job_gpus, worker_command
from engine.procs import die_with_parent_if_asked
from engine.redaction import RedactingFilter, redact_url
from engine.store import TERMINAL, Store
from engine.store.artifacts import ArtifactsError, artifacts, job_log

log = logging.getLogger("sensei.jobs")

# Job kind -> "module:function". Each entry point is ``main(ctx: JobContext) -> None``.
REGISTRY: dict[str, str] = {
    "teacher": "engine.teacher.job:main",
    "train": "engine.training.job:main",
    "small_judge": "engine.judges.small.job:main",
    "embed": "engine.data.embed_job:main",
    "import": "engine.data.import_job:main",
    "judge": "engine.judges.job:main",
    "small_judge_run": "engine.judges.small.flow:run_main",
    "pairwise": "engine.judges.pairwise:main",
    "sleep": "engine.jobs:sleep_job",  # a do-nothing job for tests and smoke checks
}


def sleep_job(ctx: JobContext) -> None:
    """Sleep ``spec['seconds']`` in small steps, reporting progress (tests, smoke checks).

    Its messages carry the GPUs it was given, so tests can see the scheduler's assignment.
    """
    seconds = float(ctx.spec.get("seconds", 1.0))
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "-")
    threads = os.environ.get("OMP_NUM_THREADS", "-")
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        time.sleep(seconds / steps)
        ctx.progress((i + 1) / steps, f"slept {i + 1}/{steps} on gpus [{gpus}], threads {threads}")
    if ctx.spec.get("fail"):
        raise RuntimeError("asked to fail")


CPU_JOB_MEMORY = 4 * 1024**3
"""Memory a CPU job may need (a small student, its optimizer state and the evaluation's
generation): the default number of CPU slots never promises more than the machine has free."""
MAX_DEFAULT_CPU_JOBS = 4
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def max_concurrency() -> int:
    """CPU jobs run at once: ``SENSEI_MAX_JOBS``, else one per core (at most
    :data:`MAX_DEFAULT_CPU_JOBS`, and no more than free memory holds at
    :data:`CPU_JOB_MEMORY` each). Jobs on GPUs are limited by free GPUs instead.

    Why not one job on every core: the students an ablation trains on a CPU are small, and
    their matrix products are too small to keep several threads busy. Two single-threaded
    trainings on 2 cores finished 4 runs in 69 s where one two-threaded training at a time took
    112 s (the demo's size-200 runs, 150 steps each). Each CPU worker gets
    :func:`cpu_threads` threads."""
    value = os.environ.get("SENSEI_MAX_JOBS")
    if value is not None:
        try:
            return max(1, int(value))
        except ValueError:
            return 1
    cores = usable_cores()
    by_memory = int(psutil.virtual_memory().available // CPU_JOB_MEMORY)
    return max(1, min(cores, MAX_DEFAULT_CPU_JOBS, by_memory))


def cpu_threads() -> int:
    """Threads each CPU job's torch uses: the cores shared out between the CPU slots."""
    return max(1, usable_cores() // max_concurrency())


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- processes
def _proc_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int | None, started_at: float | None) -> bool:
    """True if ``pid`` runs and is the same process (start time matches: pids get reused)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or abs(proc.create_time() - started_at) < 1.0
    except psutil.Error:
        return False


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def spawn_worker(
    store: Store, job: dict[str, Any], devices: list[str] | None = None
) -> subprocess.Popen[bytes] | None:
    """Start the job's worker in its own session on ``devices``; mark the job running."""
    log_path = Path(job["log_path"])
    env = _worker_env()
    if devices is not None:
        # An empty list hides every GPU: a CPU job on a GPU machine must not grab one.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices) if devices else ""
    if not devices:  # a CPU job shares the cores with the other CPU slots (unless told otherwise)
        for var in THREAD_VARS:
            env.setdefault(var, str(cpu_threads()))
    proc = popen_worker(job["id"], str(store.home), log_path, devices or [], env, start_new_session=True)
    if not store.mark_started(job["id"], proc.pid, _proc_start_time(proc.pid), devices):
        # Cancelled between our read and now: stop the worker we just started.
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    return proc


REPO_ROOT = Path(__file__).resolve().parent.parent


def popen_worker(
    job_id: str, home: str, log_path: str | Path, devices: list[str], env: dict[str, str], **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``python -m engine worker JOB`` (``accelerate launch`` across several ``devices``)
    with ``env``, its output appended to the job's log file; ``popen`` goes to ``Popen``."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            worker_command(job_id, home, devices),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(REPO_ROOT),
            **popen,
        )


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# ------------------------------------------------------------------------- executors
EXECUTORS = ("local", "ray")


def executor_name() -> str:
    """``SENSEI_EXECUTOR``: ``local`` (subprocesses on this machine, the default) or ``ray``.

    Raises:
        ValueError: any other value (the message names the setting).
    """
    value = (os.environ.get("SENSEI_EXECUTOR") or "local").strip().lower()
    if value not in EXECUTORS:
        raise ValueError(
            f"SENSEI_EXECUTOR={value!r}: use 'local' (subprocesses on this machine, the default) or 'ray'"
        )
    return value


class Worker(Protocol):
    """A started worker as the scheduler tracks it: a :class:`subprocess.Popen`, or a Ray task."""

    def poll(self) -> int | None:
        """None while the worker runs, then its exit code."""


class Executor(Protocol):
    """Where the scheduler starts workers."""

    def start(self, store: Store, runnable: list[dict[str, Any]], children: dict[str, Worker]) -> int:
        """Start what fits of ``runnable`` (oldest first), adding each worker to ``children``;
        return how many started."""

    def stop_cancelled(self, store: Store, children: dict[str, Worker]) -> None:
        """Stop the workers of jobs that were cancelled but still run."""


class LocalExecutor:
    """Subprocesses on this machine: each GPU job on its own free GPUs, CPU jobs up to
    :func:`max_concurrency` at once."""

    def __repr__(self) -> str:
        return f"local subprocesses, max {max_concurrency()} CPU job(s) at once"

    def start(self, store: Store, runnable: list[dict[str, Any]], children: dict[str, Worker]) -> int:
        running = store.list_jobs(statuses=("running",))
        slots = gpu_slots()
        busy = {d for j in running for d in (j.get("devices") or [])}
        cpu_running = sum(1 for j in running if not j.get("devices"))
        started = 0
        for job in runnable:
            need = job_gpus(job) if slots else 0
            if need > len(slots):
                error = f"needs {need} GPUs, this machine has {len(slots)}"
                store.finish_job(job["id"], "failed", error=error)
                continue
            if need == 0:
                if cpu_running >= max_concurrency():
                    continue
                devices: list[str] | None = [] if slots else None
            else:
                devices = assign(need, slots, busy)
                if devices is None:
                    continue
            proc = spawn_worker(store, job, devices)
            if proc is not None:
                children[job["id"]] = proc
                busy.update(devices or [])
                cpu_running += 0 if devices else 1
                started += 1
        return started

    def stop_cancelled(self, store: Store, children: dict[str, Worker]) -> None:
        """Nothing to do: :func:`cancel_job` signals a local worker's process group itself."""


def make_executor() -> Executor:
    """The executor ``SENSEI_EXECUTOR`` names; Ray's connects to its cluster (``RAY_ADDRESS``).

    Raises:
        ValueError: ``SENSEI_EXECUTOR`` is neither ``local`` nor ``ray``.
    """
    if executor_name() == "ray":
        from engine.ray_executor import RayExecutor

        return RayExecutor()
    return LocalExecutor()


# ------------------------------------------------------------------------ queue logic
def cancel_job(store: Store, job_id: str, reason: str | None = None, *, actor: Actor) -> bool:
    """Cancel a queued or running job. A running worker's process group gets SIGTERM, then
    SIGKILL if it has not exited after a grace period; a Ray task has no local process, and
    the scheduler that owns it cancels it (``ray.cancel(force=True)``) on its next tick.
    Returns False if already finished.

    The job's error and event say who cancelled it (``reason`` defaults to
    ``cancelled by <name>``), and the audit log records it.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not cancel.
        KeyError: no such job.
    """
    check(store, actor, Right.CANCEL, "cancel jobs", job_id)
    job = store.get_job(job_id)
    if job is None:
        raise KeyError(f"no job {job_id}")
    reason = reason or f"cancelled by {actor.name}"
    if not store.finish_job(job_id, "cancelled", error=reason):
        return False
    store.add_event("info", "cancelled", reason, job_id=job_id, run_id=job.get("run_id"))
    done(store, actor, "cancel", job_id, kind=job["kind"], experiment=job.get("experiment_id"))
    if job["pid"] and process_alive(job["pid"], job["pid_started_at"]):
        _kill_group(job["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process_alive(job["pid"], job["pid_started_at"]):
            time.sleep(0.1)
        if process_alive(job["pid"], job["pid_started_at"]):
            _kill_group(job["pid"], signal.SIGKILL)
    return True


def cancel_experiment(store: Store, experiment_id: str, *, actor: Actor) -> int:
    """Cancel every unfinished job of an experiment; returns how many were cancelled.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not cancel.
    """
    check(store, actor, Right.CANCEL, "cancel experiments", experiment_id)
    jobs = store.list_jobs(experiment_id=experiment_id, statuses=("queued", "running"))
    reason = f"experiment cancelled by {actor.name}"
    return sum(cancel_job(store, j["id"], reason, actor=actor) for j in jobs)


def _death(child: Worker, code: int) -> tuple[int | None, str]:
    """Why a tracked worker that ended without finishing its row died: (exit code, reason)."""
    failure = getattr(child, "failure", None)  # a Ray task whose worker process or node died
    if failure:
        return None, failure
    return code, (f"worker died (exit code {code})" if code >= 0 else f"worker died (signal {-code})")


def _untracked_death(job: dict[str, Any]) -> str:
    if (job.get("executor_ref") or "").startswith("ray:"):
        # A scheduler's Ray tasks end with it (Ray stops a driver's tasks when it disconnects).
        return f"worker died: its Ray task ({job['executor_ref']}) ended with the scheduler that submitted it"
    return "worker died"


def reconcile(store: Store, children: dict[str, Worker] | None = None) -> list[str]:
    """Mark running jobs whose worker is gone as failed ("worker died ...").

    Jobs whose worker is our own child (or Ray task) are judged by how it ended; others (left
    by an earlier scheduler) by whether their pid still runs. A Ray failure's reason is also
    appended to the job's log, which is otherwise kept as the worker left it.
    """
    children = children or {}
    died = []
    for job in store.list_jobs(statuses=("running",)):
        child = children.get(job["id"])
        if child is not None:
            code = child.poll()
            if code is None:
                continue
            exit_code, reason = _death(child, code)
        elif process_alive(job["pid"], job["pid_started_at"]):
            continue
        else:
            exit_code, reason = None, _untracked_death(job)
        # A worker that finished cleanly has already moved its row; this only catches deaths.
        if store.finish_job(job["id"], "failed", error=reason, exit_code=exit_code):
            store.add_event("error", "worker_died", reason, job_id=job["id"], run_id=job.get("run_id"))
            if child is not None and getattr(child, "failure", None):
                _append_log(store, job, f"[scheduler] {reason}")
            died.append(job["id"])
    return died


def _append_log(store: Store, job: dict[str, Any], line: str) -> None:
    """Add the scheduler's line to a job's log: to the whole log, also when the job ran on
    another node (its uploaded copy is fetched first, and the result uploaded again)."""
    path = Path(job["log_path"])
    with contextlib.suppress(OSError, ArtifactsError):  # a log line never stops the scheduler
        arts = artifacts(store)
        if not path.is_file():
            arts.pull(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"\n{redact_url(line)}\n")
        arts.push(path)


def _propagate_failures(store: Store) -> None:
    """Queued jobs whose dependency failed or was cancelled can never run: finish them."""
    jobs = {j["id"]: j for j in store.list_jobs()}
    for job in jobs.values():
        if job["status"] != "queued":
            continue
        for dep in job["depends_on"]:
            dep_job = jobs.get(dep)
            if dep_job is None or dep_job["status"] in ("failed", "cancelled"):
                state = "missing" if dep_job is None else dep_job["status"]
                store.finish_job(job["id"], "cancelled", error=f"dependency {dep} {state}")
                break


def runnable_jobs(store: Store) -> list[dict[str, Any]]:
    """Queued jobs whose dependencies all succeeded, oldest first."""
    status = {j["id"]: j["status"] for j in store.list_jobs()}
    queued = sorted(store.list_jobs(statuses=("queued",)), key=lambda j: (j["created_at"], j["id"]))
    return [j for j in queued if all(status.get(d) == "succeeded" for d in j["depends_on"])]


def schedule_once(store: Store, children: dict[str, Worker], executor: Executor | None = None) -> int:
    """One scheduler tick: stop cancelled workers, reap, reconcile, propagate failures, start
    what fits (on ``executor``, local subprocesses by default). Returns the number started."""
    executor = executor or LocalExecutor()
    executor.stop_cancelled(store, children)
    for job_id, child in list(children.items()):
        code = child.poll()
        if code is not None:
            job = store.get_job(job_id)
            exit_code = _death(child, code)[0]
            if job and job["status"] in TERMINAL and job["exit_code"] is None and exit_code is not None:
                store.set_exit_code(job_id, exit_code)
    reconcile(store, children)
    for job_id in [j for j, c in children.items() if c.poll() is not None]:
        del children[job_id]
    _propagate_failures(store)
    return executor.start(store, runnable_jobs(store), children)


# ------------------------------------------------------------------------- scheduler
STARTING_GRACE_S = 30.0
"""How long after a start request a scheduler that does not hold its lock yet counts as starting
(a Python process that imports the engine takes a few seconds); after that it is idle again."""


def _lock_path(store: Store) -> Path:
    return store.home / "scheduler.lock"


def _starting_path(store: Store) -> Path:
    # Written by ensure_scheduler, removed by the scheduler once it holds the lock.
    return store.home / "scheduler.starting"


def scheduler_running(store: Store) -> bool:
    """True if some process holds this workspace's scheduler lock, or (PostgreSQL) some
    machine's scheduler holds its database's."""
    with open(_lock_path(store), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return store.db.scheduler_lock_taken()


def scheduler_state(store: Store, now: float | None = None) -> str:
    """``running`` (a scheduler holds the lock), ``starting`` (one was started less than
    :data:`STARTING_GRACE_S` ago and its process is alive, but it holds no lock yet) or ``idle``."""
    if scheduler_running(store):
        return "running"
    try:
        mark = json.loads(_starting_path(store).read_text())
        pid, created, since = int(mark["pid"]), mark.get("created"), float(mark["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return "idle"
    fresh = 0 <= (now if now is not None else time.time()) - since < STARTING_GRACE_S
    return "starting" if fresh and process_alive(pid, created) else "idle"


def _error_path(store: Store) -> Path:
    return store.home / "scheduler.error"


def scheduler_error(store: Store) -> str | None:
    """Why the last scheduler for this workspace could not start (``None`` once one did):
    its executor could not be made (e.g. ``RAY_ADDRESS`` names no Ray head)."""
    try:
        return _error_path(store).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _spawn_scheduler(store: Store, idle_exit_s: float) -> subprocess.Popen[bytes]:
    log_path = store.logs_dir / "scheduler.log"
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "scheduler",
                "--home",
                str(store.home),
                "--idle-exit",
                str(idle_exit_s),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=_worker_env(),
            cwd=str(REPO_ROOT),
        )


def run_scheduler(store: Store, poll_s: float = 0.5, idle_exit_s: float | None = None) -> int:
    """Run the scheduler loop until SIGTERM/SIGINT (or idle for ``idle_exit_s``).

    Returns 0, 2 if its executor cannot be made (the reason goes to the log and to
    :func:`scheduler_error`), or 3 if another scheduler already owns this workspace, or its
    database (PostgreSQL shared by several machines: one scheduler for all of them, so none
    takes another's running jobs for dead ones).
    """
    fh = open(_lock_path(store), "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another scheduler is running for %s", store.home)
        return 3
    db_lock = store.db.take_scheduler_lock()
    if db_lock is None:
        log.info("another scheduler is running for the database %s", store.location)
        _starting_path(store).unlink(missing_ok=True)
        fh.close()
        return 3
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _starting_path(store).unlink(missing_ok=True)  # started: the lock says so from now on
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        executor = make_executor()
    except Exception as err:  # a bad SENSEI_EXECUTOR, an unreachable Ray head, Ray missing
        reason = redact_url(str(err))
        log.error("scheduler cannot start: %s", reason)
        _error_path(store).write_text(reason + "\n", encoding="utf-8")
        db_lock.release()
        fh.close()
        return 2
    _error_path(store).unlink(missing_ok=True)
    children: dict[str, Worker] = {}
    died = reconcile(store)
    if died:
        log.warning("reconciled %d job(s) whose worker had died: %s", len(died), ", ".join(died))
    idle_since = time.monotonic()
    log.info("scheduler up for %s (%s)", store.home, executor)
    while not stop:
        if not db_lock.alive():  # the database server restarted: another scheduler may own it now
            log.error("lost the database's scheduler lock (%s), exiting", store.location)
            break
        schedule_once(store, children, executor)
        if children or store.list_jobs(statuses=("queued",)):
            idle_since = time.monotonic()
        elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
            log.info("idle for %.0f s, exiting", idle_exit_s)
            break
        time.sleep(poll_s)
    # Local workers are detached sessions: they keep running and a later scheduler reconciles
    # them. Ray tasks end with this process (their driver): the next scheduler fails them.
    db_lock.release()
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()
    return 0


def ensure_scheduler(store: Store, idle_exit_s: float = 900.0) -> bool:
    """Start a detached scheduler for this workspace unless one runs or is starting. True if
    started; until it holds its lock, :func:`scheduler_state` says ``starting``.

    Raises:
        ValueError: ``SENSEI_EXECUTOR`` is not a known executor (said here, not in its log).
    """
    executor_name()
    if scheduler_state(store) != "idle":
        return False
    _error_path(store).unlink(missing_ok=True)  # an earlier failure is not this one's
    proc = _spawn_scheduler(store, idle_exit_s)
    mark = {"pid": proc.pid, "created": _proc_start_time(proc.pid), "ts": time.time()}
    tmp = _starting_path(store).with_suffix(".tmp")
    tmp.write_text(json.dumps(mark))
    os.replace(tmp, _starting_path(store))  # never half a file for scheduler_state to read
    return True


# ---------------------------------------------------------------------------- worker
def _resolve(kind: str) -> Any:
    target = REGISTRY.get(kind)
    if target is None:
        raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(sorted(REGISTRY))})")
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def run_worker(store: Store, job_id: str) -> int:
    """Body of ``python -m engine worker <job_id>``: run the job and record how it ended."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
    for handler in logging.getLogger().handlers:  # the job log must not keep a key from a URL
        handler.addFilter(RedactingFilter())
    die_with_parent_if_asked()  # under a Ray task: this rank ends with its launcher (engine.procs)
    job = store.get_job(job_id)
    if job is None:
        print(f"no job {job_id} in {store.location}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        # Under `accelerate launch` only rank 0 owns the job row; other ranks just compute.
        ctx = JobContext(store=store, job=job, spec=job["spec"], log=logging.getLogger("sensei.rank"))
        _resolve(job["kind"])(ctx)
        return 0
    if job["status"] == "queued":  # started by hand (e.g. `python -m engine worker` while debugging)
        store.mark_started(job_id, os.getpid(), _proc_start_time(os.getpid()))

    def _on_term(*_: Any) -> None:
        raise JobCancelled()

    signal.signal(signal.SIGTERM, _on_term)
    log.info("job %s (%s) starting, pid %d", job_id, job["kind"], os.getpid())
    ctx = JobContext(store=store, job=job, spec=job["spec"], log=logging.getLogger(f"sensei.{job['kind']}"))
    try:
        _resolve(job["kind"])(ctx)
    except JobCancelled:
        store.finish_job(job_id, "cancelled", error="cancelled", exit_code=143)
        log.info("job %s cancelled", job_id)
        return 143
    except BaseException as err:  # every failure must land in the store
        tb = redact_url(traceback.format_exc())
        print(tb, flush=True)
        reason = redact_url(f"{type(err).__name__}: {err}")
        store.finish_job(job_id, "failed", error=reason, exit_code=1)
        store.add_event("error", "failed", reason, job_id=job_id, run_id=job.get("run_id"))
        return 1
    # A job's own last message (e.g. "teacher 1200/1200 · $0.41") says more than "done".
    last = (store.get_job(job_id) or {}).get("message") or "done"
    store.finish_job(job_id, "succeeded", exit_code=0, message=last)
    log.info("job %s succeeded", job_id)
    return 0


def eta_seconds(job: dict[str, Any], now: float | None = None) -> float | None:
    """Remaining time estimated from progress so far (None until there is some progress)."""
    if job["status"] != "running" or not job["started_at"] or not job["progress"]:
        return None
    elapsed = (now or time.time()) - job["started_at"]
    p = float(job["progress"])
    if p <= 0.01 or elapsed <= 0:
        return None
    return max(0.0, elapsed * (1 - p) / p)


def read_log(job: dict[str, Any], max_bytes: int | None = None) -> str:
    """A job's log as text: the whole file, or its last ``max_bytes`` ('' if there is none yet).

    A cut starts at the next whole line, so the first line shown is never half a line.
    """
    if not job.get("log_path"):
        return ""
    path = job_log(job["log_path"])  # a job that ran on another node: the copy it uploaded
    if not path.is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        start = 0 if max_bytes is None else max(0, size - max_bytes)
        fh.seek(start)
        data = fh.read()
    if start and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return data.decode("utf-8", errors="replace")


def log_tail(job: dict[str, Any], lines: int = 40) -> str:
    """The last lines of a job's log file ('' if there is none yet)."""
    return "\n".join(read_log(job, max_bytes=64_000).splitlines()[-lines:])
