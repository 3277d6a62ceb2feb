"""``python -m engine``: the command line. It only parses arguments and dispatches.

Commands:
    demo [--preset standard|fast]   run the built-in ablation headless and print its curve
    launch SPEC.yaml [-o k=v ...]   queue an experiment from a YAML spec (+ dotted overrides)
    status [EXPERIMENT_ID]          experiments and jobs with their state
    cancel ID                       cancel a job, or every unfinished job of an experiment
    resume ID                       continue a failed/cancelled train job (or run) from its checkpoint
    curve EXPERIMENT_ID             print an experiment's curve table
    versus-teacher EXPERIMENT_ID    judge every finished run against the teacher (pairwise) [--wait]
    export RUN_ID OUT_DIR           standalone model folder (adapter merged) + model card; alias merge
    scheduler [--idle-exit S]       run the scheduler in the foreground
    worker JOB_ID                   run one job (the scheduler starts these)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from engine import ablation, jobs
from engine.specs import SpecError, demo_spec, load_spec
from engine.store import TERMINAL, Store


def _print_curve(store: Store, exp_id: str) -> int:
    curve = ablation.experiment_curve(store, exp_id)
    if curve is None:
        print(f"no experiment {exp_id}", file=sys.stderr)
        return 2
    if not curve.sizes:
        print("no finished runs yet")
        return 1
    print(f"{'train_size':>10}  {curve.metric:>16}  {'std':>7}  {'seeds':>5}  {'gain/100 ex':>11}")
    for row in curve.table():
        gain = "" if row["gain_per_100"] is None else f"{row['gain_per_100']:+.4f}"
        print(
            f"{row['train_size']:>10}  {row[curve.metric]:>16.4f}  {row['std']:>7.4f}"
            f"  {row['seeds']:>5}  {gain:>11}"
        )
    if curve.ceiling is not None:
        print(f"teacher ceiling: {curve.ceiling:.4f}")
    if curve.fit:
        far = curve.sizes[-1] * 4
        print(
            f"fit: {curve.metric} ≈ {curve.fit['c']:.3f} - {curve.fit['a']:.3f}·n^-{curve.fit['b']:.3f}"
            f"  (predicts {curve.predict(far):.4f} at n={far})"
        )
    print(curve.summary_line())
    return 0


def _wait(store: Store, exp_id: str) -> str:
    """Follow an experiment's jobs until all are finished, printing a line when a job
    changes status or passes another tenth of its work."""
    seen: dict[str, tuple[str, int]] = {}
    while True:
        job_rows = sorted(store.list_jobs(experiment_id=exp_id), key=lambda j: j["created_at"])
        for j in job_rows:
            state = (j["status"], int(j["progress"] * 10) if j["status"] == "running" else 0)
            if seen.get(j["id"]) != state:
                seen[j["id"]] = state
                detail = j["error"] or j["message"] or ""
                print(
                    f"{time.strftime('%H:%M:%S')}  {j['id']}  {j['kind']:<8} {j['status']:<10}"
                    f" {j['progress'] * 100:5.1f}%  {detail}",
                    flush=True,
                )
        if all(j["status"] in TERMINAL for j in job_rows):
            return ablation.experiment_status(store, exp_id)
        jobs.ensure_scheduler(store, idle_exit_s=60)
        time.sleep(1.0)


def cmd_demo(args: argparse.Namespace, store: Store) -> int:
    spec = demo_spec(args.preset)
    exp_id = ablation.launch_experiment(store, spec)
    print(
        f"experiment {exp_id} queued in {store.home} "
        f"(sizes {spec.ablation.train_sizes}, seeds {spec.ablation.seeds})",
        flush=True,
    )
    jobs.ensure_scheduler(store, idle_exit_s=60)
    status = _wait(store, exp_id)
    print(f"experiment {exp_id}: {status}")
    rc = _print_curve(store, exp_id)
    return 0 if status == "succeeded" and rc == 0 else 1


def cmd_launch(args: argparse.Namespace, store: Store) -> int:
    try:
        spec = load_spec(args.spec, args.override)
    except SpecError as err:
        print(f"refused, nothing queued:\n{err}", file=sys.stderr)
        return 2
    exp_id = ablation.launch_experiment(store, spec)
    jobs.ensure_scheduler(store)
    print(exp_id)
    if args.wait:
        return 0 if _wait(store, exp_id) == "succeeded" else 1
    return 0


def cmd_status(args: argparse.Namespace, store: Store) -> int:
    exps = [e for e in store.list_experiments() if not args.experiment or e["id"] == args.experiment]
    if not exps:
        print("no experiments yet: try `python -m engine demo`")
    for exp in exps:
        print(f"{exp['id']}  {exp['name']}  {ablation.experiment_status(store, exp['id'])}")
        for j in sorted(store.list_jobs(experiment_id=exp["id"]), key=lambda j: j["created_at"]):
            eta = jobs.eta_seconds(j)
            extra = f" eta {eta:.0f}s" if eta is not None else ""
            print(
                f"  {j['id']}  {j['kind']:<8} {j['status']:<10} {j['progress'] * 100:5.1f}%"
                f"{extra}  {j['error'] or j['message'] or ''}"
            )
    print(f"scheduler: {'running' if jobs.scheduler_running(store) else 'not running'}")
    return 0


def cmd_cancel(args: argparse.Namespace, store: Store) -> int:
    if args.id.startswith("exp-"):
        n = jobs.cancel_experiment(store, args.id)
        print(f"cancelled {n} job(s)")
        return 0
    try:
        ok = jobs.cancel_job(store, args.id)
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    print("cancelled" if ok else "already finished")
    return 0 if ok else 1


def cmd_resume(args: argparse.Namespace, store: Store) -> int:
    from engine.training.resume import ResumeError, resume_job

    try:
        new_id = resume_job(store, args.id)
    except ResumeError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    jobs.ensure_scheduler(store)
    print(new_id)
    return 0


def cmd_export(args: argparse.Namespace, store: Store) -> int:
    from engine.training.export import ArtifactMismatch, merge_run

    run = store.get_run(args.run_id)
    if run is None:
        print(f"no run {args.run_id}", file=sys.stderr)
        return 2
    try:
        out = merge_run(run["run_dir"], args.out_dir, args.base, metrics=run.get("metrics") or None)
    except (ArtifactMismatch, FileExistsError, FileNotFoundError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


def cmd_versus_teacher(args: argparse.Namespace, store: Store) -> int:
    from engine.judges import pairwise as pairwise_job

    try:
        queued = pairwise_job.launch_versus_teacher(store, args.experiment)
    except ValueError as err:  # SpecError too
        print(f"refused: {err}", file=sys.stderr)
        return 2
    print(f"queued {len(queued)} comparison(s)" + (": " + " ".join(queued) if queued else ""))
    if queued:
        jobs.ensure_scheduler(store)
        if args.wait:
            _wait(store, args.experiment)
    print(f"{'train_size':>10}  {'seed':>4}  {'student score':>13}  {'95% CI':>14}  {'pairs':>5}  judge")
    for row in pairwise_job.versus_teacher(store, args.experiment):
        score = "—" if row["student_score"] is None else f"{row['student_score']:.3f}"
        ci = "—" if row["ci"] is None else f"[{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]"
        size, seed, pairs = row["train_size"], row["seed"], row["pairs"]
        print(f"{size:>10}  {seed:>4}  {score:>13}  {ci:>14}  {pairs:>5}  {row['judge']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Sensei engine")
    parser.add_argument("--home", help="workspace folder (default: $SENSEI_HOME or ./workspace)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="run the built-in ablation headless and print its curve")
    p.add_argument("--preset", default="standard", choices=["standard", "fast"])
    p = sub.add_parser("launch", help="queue an experiment from a YAML spec")
    p.add_argument("spec")
    p.add_argument("-o", "--override", action="append", default=[], help="dotted override key.path=value")
    p.add_argument("--wait", action="store_true", help="follow the jobs until they finish")
    p = sub.add_parser("status", help="experiments and jobs")
    p.add_argument("experiment", nargs="?")
    p = sub.add_parser("cancel", help="cancel a job or an experiment")
    p.add_argument("id")
    p = sub.add_parser("resume", help="continue a failed or cancelled train job from its last checkpoint")
    p.add_argument("id", help="the train job's id, or its run's id")
    p = sub.add_parser("curve", help="print an experiment's curve")
    p.add_argument("experiment")
    p = sub.add_parser("versus-teacher", help="judge every finished run against the teacher (pairwise)")
    p.add_argument("experiment")
    p.add_argument("--wait", action="store_true", help="follow the comparisons until they finish")
    p = sub.add_parser(
        "export", aliases=["merge"], help="write a run's model as a standalone folder (adapter merged)"
    )
    p.add_argument("run_id")
    p.add_argument("out_dir")
    p.add_argument("--base", default=None, help="base model for an adapter run (default: the recorded one)")
    p = sub.add_parser("scheduler", help="run the scheduler in the foreground")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    p = sub.add_parser("worker", help="run one job (started by the scheduler)")
    p.add_argument("job_id")
    for name in ("scheduler", "worker"):  # accept --home after the sub-command too
        sub.choices[name].add_argument("--home", dest="home_sub")
    args = parser.parse_args(argv)
    store = Store(getattr(args, "home_sub", None) or args.home)
    if args.cmd == "scheduler":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        return jobs.run_scheduler(store, idle_exit_s=args.idle_exit)
    if args.cmd == "worker":
        return jobs.run_worker(store, args.job_id)
    if args.cmd == "curve":
        return _print_curve(store, args.experiment)
    commands = {
        "demo": cmd_demo,
        "launch": cmd_launch,
        "status": cmd_status,
        "cancel": cmd_cancel,
        "resume": cmd_resume,
        "export": cmd_export,
        "merge": cmd_export,
        "versus-teacher": cmd_versus_teacher,
    }
    return commands[args.cmd](args, store)


if __name__ == "__main__":
    sys.exit(main())
