"""Ablation page render time: a crowded workspace against an empty one, in one run.

The crowded workspace holds 200 experiments of 30 finished runs each (10 sizes x 3 seeds),
every run with per-example scores on a 100-example test split, so the page does its real
work: list the experiments, bootstrap the points' intervals, fit and validate the curve,
suggest the next size, read the discussion. The empty workspace renders the page's empty
state. Both render through Streamlit's AppTest, the newest experiment in focus; each is run
``--repeats`` times and the median kept.

Run::

    .venv/bin/python bench/ablation_page.py [--experiments 200] [--runs 30] [--repeats 3]

Last line: ``ratio=<crowded / empty>`` (target <= 3).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere

import numpy as np  # noqa: E402

from engine.ablation.grid import add_cells  # noqa: E402
from engine.specs import demo_spec  # noqa: E402
from engine.store import Store  # noqa: E402

SIZES = [25, 50, 100, 150, 200, 300, 400, 600, 800, 1000]


def populate(home: Path, experiments: int, runs: int) -> None:
    """Write ``experiments`` finished experiments of ``runs`` runs straight into the store."""
    from engine.data.datasets import ensure_dataset

    store = Store(home)
    spec = demo_spec()
    dataset_id = ensure_dataset(store, spec)
    examples = store.get_examples(dataset_id)
    store.save_teacher_responses(
        dataset_id,
        spec.teacher_key(),
        [
            {"idx": e["idx"], "request_hash": f"h{e['idx']}", "output": e["reference"], "valid": True}
            for e in examples
        ],
    )
    test = store.get_examples(dataset_id, "test")
    spec_dict = spec.model_dump(mode="json")
    rng = np.random.default_rng(0)
    cells = [(n, s) for n in SIZES for s in range(3)][:runs]
    for e in range(experiments):
        with store.tx() as conn:
            exp_id = store.add_experiment(conn, f"bench-{e}", spec_dict, spec.fingerprint())
            teacher = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
            run_ids = add_cells(store, conn, spec, exp_id, teacher, cells)
            conn.execute("UPDATE experiments SET dataset_id=? WHERE id=?", (dataset_id, exp_id))
        run_jobs = [(r["id"], r["job_id"], r["train_size"]) for r in map(store.get_run, run_ids) if r]
        store.finish_job(teacher, "succeeded")
        for run_id, job_id, n in run_jobs:
            p = 0.92 - 1.6 * n**-0.5
            hits = rng.random(len(test)) < p
            store.save_outputs(
                run_id,
                [
                    {
                        "idx": ex["idx"],
                        "prompt": ex["prompt"],
                        "output": "",
                        "reference": ex["reference"],
                        "scores": {"field_accuracy": float(h)},
                    }
                    for ex, h in zip(test, hits, strict=True)
                ],
            )
            store.set_run_metrics(run_id, {"field_accuracy": float(hits.mean()), "train_time_s": n / 10})
            store.finish_job(job_id, "succeeded")
        (store.experiments_dir / exp_id).mkdir(parents=True, exist_ok=True)
        (store.experiments_dir / exp_id / "teacher_summary.json").write_text(
            json.dumps({"answered": len(examples), "cost_usd": 0.139})
        )


def render_seconds(home: Path, repeats: int) -> float:
    """Median wall time of one render of the Ablation page (AppTest), app start excluded."""
    from streamlit.testing.v1 import AppTest

    os.environ["SENSEI_HOME"] = str(home)
    os.environ["SENSEI_NO_AUTOSTART"] = "1"
    times = []
    for _ in range(repeats):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
        start = time.perf_counter()
        at.switch_page("views/ablation.py").run()
        times.append(time.perf_counter() - start)
        assert not at.exception, [e.value for e in at.exception]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        empty, crowded = Path(tmp) / "empty", Path(tmp) / "crowded"
        start = time.perf_counter()
        populate(crowded, args.experiments, args.runs)
        took = time.perf_counter() - start
        print(f"populated {args.experiments} experiments x {args.runs} runs in {took:.1f} s")
        Store(empty)
        t_empty = render_seconds(empty, args.repeats)
        t_crowded = render_seconds(crowded, args.repeats)
    print(f"empty workspace:   {t_empty:.3f} s per render")
    print(f"crowded workspace: {t_crowded:.3f} s per render")
    print(f"ratio={t_crowded / t_empty:.2f}")


if __name__ == "__main__":
    main()
