"""``python -m engine``: the command line. It only parses arguments and dispatches.

Commands:
    demo [--preset standard|fast]   run the built-in ablation headless and print its curve
         [--recipes [RECIPE ...]]   ... one curve per recipe, with a small local KD teacher
    launch SPEC.yaml [-o k=v ...]   queue an experiment from a YAML spec (+ dotted overrides)
    status [EXPERIMENT_ID]          experiments and jobs with their state
    cancel ID                       cancel a job, or every unfinished job of an experiment
    resume ID                       continue a failed/cancelled train job (or run) from its checkpoint
    curve EXPERIMENT_ID [--json]    an experiment's curve: points with intervals, fit, baselines, next size
    extend EXPERIMENT_ID --sizes N… --seeds S…   add cells to an experiment (teacher answers reused)
    report EXPERIMENT_ID -o DIR     self-contained HTML report + PNG + CSV (optionally --compare)
    versus-teacher EXPERIMENT_ID    judge every finished run against the teacher (pairwise) [--wait]
    export RUN_ID OUT_DIR           standalone model folder (adapter merged) + model card; alias merge
    users [set-role SUBJECT ROLE]   who signed in to the dashboard, with roles; or change one's role
    serve [--port N] [--dry-run]    the dashboard for a team on 0.0.0.0 (refused without sign-in)
    scheduler [--idle-exit S]       run the scheduler in the foreground
    worker JOB_ID                   run one job (the scheduler starts these)

Whoever runs the command line has a shell on the server, so it acts as the local admin
(``local:<user>``, see :func:`engine.access.local_admin`); the audit log says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engine import ablation, jobs
from engine.access import Actor, local_admin
from engine.specs import ExperimentSpec, SpecError, demo_spec, load_spec
from engine.store import TERMINAL, Store


def _me() -> Actor:
    """The acting user of every command: the server's own user, as admin."""
    return local_admin()


def _print_curve(
    store: Store, exp_id: str, metric: str | None = None, target: str | None = None, as_json: bool = False
) -> int:
    exp = store.get_experiment(exp_id)
    path = ExperimentSpec.model_validate(exp["spec"]).vary_path() if exp else None
    if path is None:
        return _print_one_curve(store, exp_id, metric, target, as_json)
    # One curve per value of ablation.vary, each as for a plain experiment, then one line each.
    curves = ablation.variant_curves(store, exp_id, metric)
    try:
        reports = [(value, curve, curve.to_json(_target(target))) for value, curve in curves]
    except SpecError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({"vary": path, "curves": [{"value": v, **r} for v, _, r in reports]}, indent=2))
    else:
        for value, curve, report in reports:
            print(f"--- {path} = {value}")
            _print_report(curve, report)
        for value, stages in ablation.variant_losses(store, exp_id):
            moves = ", ".join(
                f"{s.stage} {s.first:.3f} -> {s.final:.3f}" + ("" if s.fell else " (did not fall)")
                for s in stages
            )
            print(f"loss [{_label(value)}]: {moves or 'no finished run'}")
        for value, curve, _ in reports:
            print(curve.summary_line(_label(value)))
    return 0 if reports and all(c.points for _, c, _ in reports) else 1


def _label(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _print_one_curve(
    store: Store, exp_id: str, metric: str | None = None, target: str | None = None, as_json: bool = False
) -> int:
    curve = ablation.experiment_curve(store, exp_id, metric=metric)
    if curve is None:
        print(f"no experiment {exp_id}", file=sys.stderr)
        return 2
    if metric and curve.metrics and metric not in curve.metrics:
        print(f"no metric {metric!r} in {exp_id} (metrics: {', '.join(curve.metrics)})", file=sys.stderr)
        return 2
    try:
        report = curve.to_json(_target(target))
    except SpecError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report, indent=2))
        return 0 if curve.points else 1
    if not curve.points:
        print("no finished runs yet")
        return 1
    _print_report(curve, report)
    print(curve.summary_line())
    return 0


def _print_report(curve: ablation.Curve, report: dict) -> None:
    """The points table, baselines, fit, marginal gains, target and next size of one curve."""
    if not curve.points:
        print("no finished runs yet")
        return
    print(f"{'train_size':>10}  {curve.metric:>16}  {'95% interval':>17}  {'seeds':>5}  {'gain/100 ex':>11}")
    for row in curve.table():
        gain = "" if row["gain_per_100"] is None else f"{row['gain_per_100']:+.4f}"
        ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row["ci_low"] == row["ci_low"] else "—"
        print(f"{row['train_size']:>10}  {row[curve.metric]:>16.4f}  {ci:>17}  {row['seeds']:>5}  {gain:>11}")
    for name, value in curve.baselines.items():
        print(f"baseline {name}: {value:.4f}")
    fit = report["fit"]
    if fit:
        print(
            f"fit: {fit['family']} {_params(fit['params'])}; held out n={fit['heldout_size']:.0f}: "
            f"error {fit['heldout_error']:+.4f}, {'inside' if fit['inside_band'] else 'OUTSIDE'} its band"
        )
    else:
        print(f"no fit: {report['no_fit_reason']}")
    if marginal := report["marginal"]:
        gains = [
            f"{label} -> {g['gain']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}]"
            for label, g in (
                ("+10% data", marginal["per_10_percent"]),
                ("+1,000", marginal["per_1000_examples"]),
            )
        ]
        print(f"at n={marginal['at_size']}: " + ", ".join(gains))
    if goal := report["to_target"]:
        where = "never within reach of this fit" if goal["size"] is None else f"n≈{goal['size']:.0f}"
        hi = "∞" if goal["ci_high"] is None else f"{goal['ci_high']:.0f}"
        lo = "∞" if goal["ci_low"] is None else f"{goal['ci_low']:.0f}"
        cost = f", teacher ${goal['teacher_usd']:.2f}" if "teacher_usd" in goal else ""
        print(f"target {goal['target']:.4f} ({goal['target_spec']}): {where} [{lo}, {hi}]{cost}")
    nxt = report["next_size"]
    print(f"next size: {nxt['size'] if nxt['size'] is not None else '—'} ({nxt['reason']})")


def _params(params: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in params.items())


def _target(raw: str | None) -> str | float | None:
    if raw is None or raw.strip().endswith("%"):
        return raw
    try:
        return float(raw)
    except ValueError:
        raise SpecError(
            f"--target {raw!r}: give a metric value (0.9) or a share of the teacher (95%)"
        ) from None


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
        error = jobs.scheduler_error(store)
        if error and jobs.scheduler_state(store) == "idle":
            print(f"the scheduler cannot start: {error}", file=sys.stderr, flush=True)
            return "waiting: no scheduler"
        jobs.ensure_scheduler(store, idle_exit_s=60)
        time.sleep(1.0)


def cmd_demo(args: argparse.Namespace, store: Store) -> int:
    if args.recipes is not None:
        from engine.demo.kd_teacher import demo_recipes_spec, ensure_demo_kd_teacher

        try:
            spec = demo_recipes_spec(Path("."), args.preset, args.recipes or None)  # recipes checked first
            teacher = ensure_demo_kd_teacher(store, spec, log=lambda m: print(m, flush=True))
            spec = demo_recipes_spec(teacher, args.preset, args.recipes or None)
        except SpecError as err:
            print(f"refused, nothing queued:\n{err}", file=sys.stderr)
            return 2
    else:
        spec = demo_spec(args.preset)
    exp_id = ablation.launch_experiment(store, spec, actor=_me())
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
    if not Path(args.spec).read_text(encoding="utf-8", errors="replace").strip():
        print(f"refused, nothing queued:\n{args.spec}: the spec file is empty", file=sys.stderr)
        return 2
    try:
        exp_id = ablation.launch_experiment(store, spec, actor=_me())
    except SpecError as err:
        print(f"refused, nothing queued:\n{err}", file=sys.stderr)
        return 2
    jobs.ensure_scheduler(store)
    print(exp_id)
    if args.wait:
        return 0 if _wait(store, exp_id) == "succeeded" else 1
    return 0


def cmd_extend(args: argparse.Namespace, store: Store) -> int:
    try:
        new_runs = ablation.extend_experiment(store, args.experiment, args.sizes, args.seeds, actor=_me())
    except SpecError as err:
        print(f"refused, nothing queued:\n{err}", file=sys.stderr)
        return 2
    print(f"queued {len(new_runs)} new run(s)" + (": " + " ".join(new_runs) if new_runs else ""))
    if new_runs:
        jobs.ensure_scheduler(store, idle_exit_s=60)
        if args.wait:
            status = _wait(store, args.experiment)
            print(f"experiment {args.experiment}: {status}")
            return 0 if status == "succeeded" else 1
    return 0


def cmd_report(args: argparse.Namespace, store: Store) -> int:
    from engine.ablation.report import write_report

    try:
        paths = write_report(store, args.experiment, Path(args.out), metric=args.metric, compare=args.compare)
    except (SpecError, KeyError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
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
        n = jobs.cancel_experiment(store, args.id, actor=_me())
        print(f"cancelled {n} job(s)")
        return 0
    try:
        ok = jobs.cancel_job(store, args.id, actor=_me())
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    print("cancelled" if ok else "already finished")
    return 0 if ok else 1


def cmd_resume(args: argparse.Namespace, store: Store) -> int:
    from engine.training.resume import ResumeError, resume_job

    try:
        new_id = resume_job(store, args.id, actor=_me())
    except ResumeError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    jobs.ensure_scheduler(store)
    print(new_id)
    return 0


def cmd_export(args: argparse.Namespace, store: Store) -> int:
    from engine.store.artifacts import ArtifactsError, pull_base, pull_run
    from engine.training.export import ArtifactMismatch, merge_run

    run = store.get_run(args.run_id)
    if run is None:
        print(f"no run {args.run_id}", file=sys.stderr)
        return 2
    try:
        # Trained on another machine: its model and records come from SENSEI_ARTIFACTS first.
        run_dir = pull_run(store, run)
        base = args.base or pull_base(store, run_dir)
        out = merge_run(run_dir, args.out_dir, base, metrics=run.get("metrics") or None)
    except (ArtifactMismatch, ArtifactsError, FileExistsError, FileNotFoundError) as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


def cmd_versus_teacher(args: argparse.Namespace, store: Store) -> int:
    from engine.judges import pairwise as pairwise_job

    try:
        queued = pairwise_job.launch_versus_teacher(store, args.experiment, actor=_me())
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


def cmd_users(args: argparse.Namespace, store: Store) -> int:
    from engine.access import set_role

    if args.action == "set-role":
        if not args.subject or not args.role:
            print("usage: python -m engine users set-role SUBJECT ROLE", file=sys.stderr)
            return 2
        try:
            set_role(store, args.subject, args.role, actor=_me())
        except ValueError as err:
            print(f"refused: {err}", file=sys.stderr)
            return 2
        print(f"{args.subject}: {args.role}")
        return 0
    users = store.list_users()
    if not users:
        print("nobody has signed in to this workspace yet (local single-user mode records no users)")
    for u in users:
        seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(u["last_seen_at"]))
        print(f"{u['subject']}  {u['name']}  {u['role']} (from {u['role_source']})  last seen {seen}")
    return 0


def cmd_serve(args: argparse.Namespace, store: Store) -> int:
    import os

    from engine.access.server import NotServable, serve_command

    app = Path(args.app) if args.app else Path(__file__).resolve().parents[1] / "app.py"
    try:
        cmd = serve_command(app, args.secrets_file or None, args.port)
    except NotServable as err:
        print(f"make serve: {err}", file=sys.stderr)
        return 2
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    os.execv(cmd[0], cmd)  # Streamlit takes this process over (signals, exit code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Sensei engine")
    parser.add_argument("--home", help="workspace folder (default: $SENSEI_HOME or ./workspace)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="run the built-in ablation headless and print its curve")
    p.add_argument("--preset", default="standard", choices=["standard", "fast"])
    p.add_argument(
        "--recipes",
        nargs="*",
        metavar="RECIPE",
        help="compare recipes (default: gold sft sft+dpo kd sft+kd) with a small local KD teacher, "
        "trained once and cached; prints one curve line per recipe",
    )
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
    p = sub.add_parser("curve", help="print an experiment's curve, fit and what more data buys")
    p.add_argument("experiment")
    p.add_argument("--json", action="store_true", help="machine-readable: points, fit, baselines, next size")
    p.add_argument("--metric", help="any metric of the runs (default: the spec's curve metric)")
    p.add_argument("--target", help="a metric value (0.9) or a share of the teacher (95%%); default 100%%")
    p = sub.add_parser("extend", help="add train sizes or seeds to an experiment (only new cells run)")
    p.add_argument("experiment")
    p.add_argument("--sizes", type=int, nargs="+", default=[], help="train sizes to add")
    p.add_argument("--seeds", type=int, nargs="+", default=[], help="seeds to add")
    p.add_argument("--wait", action="store_true", help="follow the new runs until they finish")
    p = sub.add_parser("report", help="write an HTML report (chart, points, fit, diff, comments) + PNG + CSV")
    p.add_argument("experiment")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--metric", help="metric of the curve")
    p.add_argument("--compare", nargs="*", default=[], help="experiments to overlay")
    p = sub.add_parser("versus-teacher", help="judge every finished run against the teacher (pairwise)")
    p.add_argument("experiment")
    p.add_argument("--wait", action="store_true", help="follow the comparisons until they finish")
    p = sub.add_parser(
        "export", aliases=["merge"], help="write a run's model as a standalone folder (adapter merged)"
    )
    p.add_argument("run_id")
    p.add_argument("out_dir")
    p.add_argument("--base", default=None, help="base model for an adapter run (default: the recorded one)")
    p = sub.add_parser("users", help="who signed in to the dashboard, and their roles")
    p.add_argument("action", nargs="?", choices=["list", "set-role"], default="list")
    p.add_argument("subject", nargs="?", help="set-role: the user's subject (see `users`)")
    p.add_argument("role", nargs="?", choices=["viewer", "annotator", "launcher", "admin"])
    p = sub.add_parser("serve", help="serve the dashboard to a team on 0.0.0.0 (needs [auth] sign-in)")
    p.add_argument("--port", type=int, default=None, help="port (default: Streamlit's, 8501)")
    p.add_argument(
        "--secrets-file",
        action="append",
        default=[],
        help="secrets.toml to use (repeatable; default: Streamlit's own search path)",
    )
    p.add_argument("--app", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
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
        return _print_curve(store, args.experiment, args.metric, args.target, args.json)
    commands = {
        "demo": cmd_demo,
        "launch": cmd_launch,
        "status": cmd_status,
        "cancel": cmd_cancel,
        "resume": cmd_resume,
        "export": cmd_export,
        "merge": cmd_export,
        "versus-teacher": cmd_versus_teacher,
        "extend": cmd_extend,
        "report": cmd_report,
        "users": cmd_users,
        "serve": cmd_serve,
    }
    return commands[args.cmd](args, store)


if __name__ == "__main__":
    sys.exit(main())
