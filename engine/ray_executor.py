"""The Ray executor (``SENSEI_EXECUTOR=ray``): each job's worker runs inside one Ray task.

The scheduler connects to the cluster at ``RAY_ADDRESS`` (``ray start --head`` prints it; if it
is unset, Ray joins the cluster started on this machine or starts one of its own) and submits
each runnable job as a task asking for what the job needs: ``num_gpus`` as many GPUs as its spec
wants (:func:`engine.devices.job_gpus`), ``num_cpus`` the threads a CPU job trains with. Inside
the task runs the same worker as on one machine, ``python -m engine worker JOB`` (``accelerate
launch`` across a multi-GPU task's GPUs), writing its log file, progress, metrics and events
to the store as always, so the pages see no difference.

The scheduler owns its tasks. The job's row says ``ray:<task id>`` (``executor_ref``);
cancelling a job from any process marks its row, and the scheduler's next tick calls
``ray.cancel(force=True)``. A task whose worker process or node died is reconciled as a failed
job with its log kept and the reason (:func:`describe_failure`), and ``resume`` continues it
from its last checkpoint on whichever node runs the new task. Ray never retries a task
(``max_retries=0``): a retried task would run the job twice beside the row's history.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from engine.devices import job_gpus
from engine.jobs import THREAD_VARS, Worker, _worker_env, max_concurrency, popen_worker
from engine.procs import DIE_WITH_PARENT_ENV, die_with_parent
from engine.store import Store
from engine.store.artifacts import ENV, Artifacts, ArtifactsError

log = logging.getLogger("sensei.ray")

NODE_VARS = ("CUDA_VISIBLE_DEVICES", "PWD", "OLDPWD", "HOSTNAME", "SHLVL", "_")
"""Variables of the scheduler's environment a task does not take: they belong to its own node
(Ray gives each task its GPUs through ``CUDA_VISIBLE_DEVICES``)."""


def cpus_per_job() -> int:
    """CPUs (and torch threads) a CPU job asks Ray for: ``OMP_NUM_THREADS`` if set, else 1.

    One thread each, because the small students trained on CPUs do not keep more threads
    busy: two single-threaded trainings beat one two-threaded one (see
    :func:`engine.jobs.max_concurrency`).
    """
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def task_env(threads: int | None) -> dict[str, str]:
    """The worker's environment as the scheduler sees it (workspace, store, keys, offline
    switches), less what belongs to a node; a CPU job's thread count set to ``threads``."""
    env = {k: v for k, v in _worker_env().items() if k not in NODE_VARS and not k.startswith("RAY_")}
    if threads:
        env.update({var: str(threads) for var in THREAD_VARS})
    return env


def run_task(job_id: str, home: str, log_path: str, env: dict[str, str], gpus: int) -> int:
    """Body of a job's Ray task: run its worker on this node and return the exit code.

    A subprocess rather than the job in the Ray worker itself: the job gets a fresh
    interpreter with its own threads, environment and log file, exactly as under the local
    executor. When the Ray worker dies (killed, ``ray.cancel(force=True)``, node lost) the
    worker dies with it at once (``PR_SET_PDEATHSIG``; so do the ranks of a multi-GPU run,
    :data:`engine.procs.DIE_WITH_PARENT_ENV`), so no orphan keeps writing to the store, and
    the job does not end as "cancelled" by the SIGTERM Ray's clean-up sends later.
    """
    import ray

    devices = [str(d) for d in ray.get_gpu_ids()] if gpus else []
    own = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # Ray's token stays here
    child_env = {**own, **env, "CUDA_VISIBLE_DEVICES": ",".join(devices)}
    child_env[DIE_WITH_PARENT_ENV] = str(int(signal.SIGKILL))
    with LogMirror(home, log_path, env):  # first: nothing after the start below may raise
        proc = popen_worker(
            job_id, home, log_path, devices, child_env, preexec_fn=die_with_parent(signal.SIGKILL)
        )
        return proc.wait()


LOG_PUSH_S = 5.0
"""How often a running task uploads its job's log when it has grown (``SENSEI_ARTIFACTS``)."""


class LogMirror:
    """While a task runs, upload its job's log to the artifacts every :data:`LOG_PUSH_S`
    seconds when it has grown, and once more at the end; without ``SENSEI_ARTIFACTS``,
    nothing. So the pages on any machine read the log of a job that ran on another node
    (:func:`engine.store.artifacts.job_log`), and a node that dies takes at most its last
    few seconds of log with it. An upload that fails is retried at the next tick; the job
    goes on either way.
    """

    def __init__(self, home: str, log_path: str, env: dict[str, str], every_s: float = LOG_PUSH_S):
        self.path = Path(log_path)
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pushed = -1
        url = env.get(ENV, "").strip()
        # The keys an upload needs (AWS_*) are in the job's environment, not this Ray worker's:
        # lent to it while the task runs, and taken back at the end (Ray reuses the process).
        self._keys = {k: v for k, v in env.items() if k.startswith("AWS_")} if url else {}
        self._saved = {k: os.environ.get(k) for k in self._keys}
        os.environ.update(self._keys)
        try:
            self._arts = Artifacts(home, url) if url else None
        except ArtifactsError as err:  # a malformed setting: the job itself will say so
            log.warning("log upload off: %s", err)
            self._arts = None

    def push(self) -> None:
        size = self.path.stat().st_size if self.path.is_file() else -1
        if self._arts is None or size == self._pushed:
            return
        try:
            self._arts.push(self.path)
            self._pushed = size
        except ArtifactsError as err:
            log.warning("log upload: %s", err)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.push()

    def __enter__(self) -> LogMirror:
        if self._arts is not None:
            self._thread = threading.Thread(target=self._run, name="sensei-log-mirror", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.push()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def describe_failure(err: BaseException) -> str:
    """A job's error for a task that ended in Ray rather than by its worker's exit."""
    from ray import exceptions as rx

    if isinstance(err, rx.TaskCancelledError):
        return "cancelled: its Ray task was cancelled"
    if isinstance(err, rx.NodeDiedError):
        return "worker died: its Ray node died (NodeDiedError)"
    if isinstance(err, rx.WorkerCrashedError):
        return "worker died: its Ray worker process crashed or was killed (WorkerCrashedError)"
    lines = str(err).strip().splitlines()
    return f"worker died: its Ray task failed ({type(err).__name__}: {lines[0] if lines else ''})"


PROBE_TIMEOUT_S = 10.0


def probe(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``RAY_ADDRESS`` (``HOST:PORT``, ``ray://HOST:PORT``).

    ``ray.init`` itself retries an unreachable head for minutes without a word to the caller;
    the scheduler would hang and every job stay queued. ``auto`` and ``local`` are Ray's to
    resolve and are not probed.

    Raises:
        RuntimeError: the address is malformed or no process accepts connections there
            within ``timeout_s`` (the message names ``RAY_ADDRESS``).
    """
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise RuntimeError(f"RAY_ADDRESS={address}: expected HOST:PORT (what `ray start --head` prints)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RuntimeError(
            f"RAY_ADDRESS={address}: no Ray head answers there ({err.strerror or err}); "
            "start one with `ray start --head`, or correct the address"
        ) from None


class RayTask:
    """A submitted job as the scheduler tracks it; ``poll()`` works like ``Popen.poll``."""

    FAILED = -1
    """What ``poll()`` returns once the task failed in Ray; :attr:`failure` says why."""

    def __init__(self, ref: Any, gpus: int) -> None:
        self.ref = ref
        self.gpus = gpus
        self.failure: str | None = None
        self.cancelled = False
        self._code: int | None = None

    @property
    def executor_ref(self) -> str:
        """How the job's row names this task: ``ray:<task id>``."""
        return f"ray:{self.ref.task_id().hex()}"

    def poll(self) -> int | None:
        """None while the task runs; then its worker's exit code, or :attr:`FAILED`."""
        if self._code is not None:
            return self._code
        import ray

        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            self._code = int(ray.get(self.ref))
        except ray.exceptions.RayError as err:
            self.failure = describe_failure(err)
            self._code = self.FAILED
        return self._code

    def cancel(self) -> None:
        """Kill the task's Ray worker, and with it the job's worker process."""
        import ray

        if not self.cancelled:
            self.cancelled = True
            ray.cancel(self.ref, force=True)


class RayExecutor:
    """Jobs as Ray tasks on the cluster at ``RAY_ADDRESS``.

    At most as many CPU jobs are in flight as the cluster has CPUs for (or ``SENSEI_MAX_JOBS``),
    and GPU jobs no more GPUs than it has, so a job's row says running only while its task
    can run, not while it waits in Ray's queue.

    Raises:
        RuntimeError: no Ray cluster could be reached (the message names ``RAY_ADDRESS``).
    """

    def __init__(self) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            if address:
                probe(address)
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = address or "(unset)"
                raise RuntimeError(f"RAY_ADDRESS={where}: no Ray cluster there: {err}") from err
        self._ray = ray
        self._task = ray.remote(max_retries=0)(run_task)

    def __repr__(self) -> str:
        res = self._ray.cluster_resources()
        return f"Ray tasks on {res.get('CPU', 0):.0f} CPU(s), {res.get('GPU', 0):.0f} GPU(s)"

    def start(self, store: Store, runnable: list[dict[str, Any]], children: dict[str, Worker]) -> int:
        res = self._ray.cluster_resources()
        cluster_gpus = int(res.get("GPU", 0))
        per_job = cpus_per_job()
        cpu_slots = max(1, int(res.get("CPU", 1)) // per_job)
        if os.environ.get("SENSEI_MAX_JOBS") is not None:  # a cap, never more than the cluster holds
            cpu_slots = min(cpu_slots, max_concurrency())
        tasks = [c for c in children.values() if isinstance(c, RayTask)]
        cpu_busy = sum(1 for t in tasks if not t.gpus)
        gpu_busy = sum(t.gpus for t in tasks)
        started = 0
        for job in runnable:
            need = job_gpus(job) if cluster_gpus else 0
            if need > cluster_gpus:
                error = f"needs {need} GPUs, the Ray cluster has {cluster_gpus}"
                store.finish_job(job["id"], "failed", error=error)
                continue
            if (need == 0 and cpu_busy >= cpu_slots) or (need and gpu_busy + need > cluster_gpus):
                continue
            if not store.mark_started(job["id"], None, None, []):
                continue  # cancelled between our read and now
            try:
                task = self.submit(store, job, need, per_job)
            except Exception as err:  # a lost cluster: say so on the job, not only in our log
                store.finish_job(job["id"], "failed", error=f"could not submit to Ray: {err}")
                continue
            children[job["id"]] = task
            cpu_busy += 0 if need else 1
            gpu_busy += need
            started += 1
        return started

    def submit(self, store: Store, job: dict[str, Any], gpus: int, cpus: int) -> RayTask:
        """Submit ``job``'s worker as a task asking for ``gpus`` GPUs (a GPU job: one CPU) or
        ``cpus`` CPUs and as many threads; record the task on the job's row."""
        options = {"num_gpus": gpus, "num_cpus": 1 if gpus else cpus, "name": f"sensei {job['id']}"}
        ref = self._task.options(**options).remote(
            job["id"], str(store.home), job["log_path"], task_env(None if gpus else cpus), gpus
        )
        task = RayTask(ref, gpus)
        store.set_executor_ref(job["id"], task.executor_ref)
        log.info("job %s submitted as %s (%s)", job["id"], task.executor_ref, options)
        return task

    def stop_cancelled(self, store: Store, children: dict[str, Worker]) -> None:
        """``ray.cancel(force=True)`` each running task whose job was cancelled (from any process)."""
        for job_id, task in children.items():
            if isinstance(task, RayTask) and not task.cancelled and task.poll() is None:
                job = store.get_job(job_id)
                if job is not None and job["status"] == "cancelled":
                    task.cancel()
