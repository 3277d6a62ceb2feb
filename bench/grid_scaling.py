"""Grid scaling on Ray: a 4-cell grid on two Ray workers against one, in one run.

A real local Ray head (127.0.0.1, two CPUs, :func:`tests.ray_head.local_ray_head`) runs the
same four independent training jobs twice through the Ray executor (``SENSEI_EXECUTOR=ray``),
each time in a fresh workspace: first one job at a time (``SENSEI_MAX_JOBS=1``), then as many
as the cluster holds (two: one CPU and one torch thread each). The cells are the demo's
smallest size with four seeds: the tiny student trained for ``--steps`` steps on the demo task
with the reference answers as teacher, then evaluated on the test split, all inside each job's
worker process (its start-up included, as in real use). The scheduler is this process, ticking
:func:`engine.jobs.schedule_once` as ``python -m engine scheduler`` would.

Run::

    .venv/bin/python bench/grid_scaling.py [--steps 80] [--size 50]

The last line is ``speedup=<x>``: the one-worker wall time over the two-worker one
(target >= 1.6; two cores at best give 2.0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere
os.chdir(ROOT)  # Ray workers import the engine from the driver's folder

from engine import jobs  # noqa: E402
from engine.specs import ExperimentSpec, demo_spec  # noqa: E402
from engine.store import Store  # noqa: E402
from tests.ray_head import local_ray_head  # noqa: E402
from tests.test_resume import _add_train_job  # noqa: E402 - the resume tests' way to queue one cell
from tests.test_train_job import _setup  # noqa: E402 - a stored dataset with a perfect teacher

SEEDS = (0, 1, 2, 3)


def grid_spec(steps: int) -> ExperimentSpec:
    spec = demo_spec("standard")
    spec.data.test_size = 40
    spec.student.budget = "steps"
    spec.student.max_steps = steps
    spec.student.save_steps = None
    spec.student.max_new_tokens = 48
    return spec


def run_grid(home: Path, spec: ExperimentSpec, size: int, max_jobs: int | None) -> float:
    """Queue the 4 cells in a fresh workspace and run them through Ray; return wall seconds."""
    os.environ["SENSEI_HOME"] = str(home)
    if max_jobs is None:
        os.environ.pop("SENSEI_MAX_JOBS", None)
    else:
        os.environ["SENSEI_MAX_JOBS"] = str(max_jobs)
    store = Store(home)
    exp_id, _ = _setup(store, spec)
    ids = [_add_train_job(store, spec.model_dump(mode="json"), exp_id, size, seed)[1] for seed in SEEDS]
    executor = jobs.make_executor()
    children: dict[str, jobs.Worker] = {}
    start = time.perf_counter()
    while True:
        jobs.schedule_once(store, children, executor)
        rows = [store.get_job(i) for i in ids]
        if all(r["status"] in ("succeeded", "failed", "cancelled") for r in rows):
            break
        time.sleep(0.2)
    wall = time.perf_counter() - start
    bad = [f"{r['id']}: {r['status']} {r['error']}" for r in rows if r["status"] != "succeeded"]
    if bad:
        raise SystemExit("cells did not succeed:\n" + "\n".join(bad))
    return wall


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80, help="training steps per cell")
    parser.add_argument("--size", type=int, default=50, help="training examples per cell")
    args = parser.parse_args(argv)
    for var, value in {
        "SENSEI_EXECUTOR": "ray",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ[var] = value
    spec = grid_spec(args.steps)
    with tempfile.TemporaryDirectory(prefix="grid-") as tmp, local_ray_head(Path(tmp) / "ray", 2) as address:
        os.environ["RAY_ADDRESS"] = address
        import ray  # after local_ray_head: Ray reads its loopback switch on import

        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            one = run_grid(Path(tmp) / "one", spec, args.size, max_jobs=1)
            print(f"1 worker : 4 cells in {one:.1f} s", flush=True)
            two = run_grid(Path(tmp) / "two", spec, args.size, max_jobs=None)
            print(f"2 workers: 4 cells in {two:.1f} s", flush=True)
        finally:
            ray.shutdown()
    speedup = one / two
    print(f"speedup={speedup:.2f}")
    return speedup


if __name__ == "__main__":
    main()
