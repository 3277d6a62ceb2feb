"""The small judge in the workspace: train one from a judge's verdicts, then let it judge.

Calibration says how far a (big, paid) LLM judge agrees with the SMEs. Once it is trusted, a
small judge (:mod:`engine.judges.small.model`) can learn it: :func:`launch_training`
collects every answer that judge graded, plus every SME-labelled answer (SME labels win),
as the text that judge saw, and queues a ``small_judge`` job that writes the model to
``<workspace>/judges/small/<name>/``. :func:`launch_run` queues a ``small_judge_run`` job
(:func:`run_main`) that grades a run's answers, or an experiment's teacher answers, with it
and saves the verdicts under the small judge's name, so Review and Calibration show it next
to the big judge it imitates, at a fraction of the cost.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.access import Actor, Right, check, done
from engine.context import JobContext
from engine.judges.job import JudgeTarget, collect_items, teacher_items
from engine.judges.judge import JudgeItem
from engine.judges.report import sme_labels
from engine.judges.small.data import LABELS, judge_text, merge_items
from engine.review.items import parse_ref
from engine.specs import SpecError, format_validation_error
from engine.store import Store

RUN_KIND = "small_judge_run"
FLOW_FILE = "flow.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def small_judges_dir(store: Store) -> Path:
    """``<workspace>/judges/small``: one folder per trained small judge."""
    return store.home / "judges" / "small"


def _target_of(ref: str) -> tuple[str, dict[str, Any]] | None:
    """``(group key, judge target)`` of an item ref, for resolving refs target by target."""
    parsed = parse_ref(ref)
    if parsed is None:
        return None
    if parsed["kind"] == "run":
        return f"run:{parsed['run_id']}", {"run_id": parsed["run_id"]}
    return f"teacher:{parsed['dataset_id']}:{parsed['teacher_key']}", parsed


def resolve_items(store: Store, refs: list[str]) -> dict[str, JudgeItem]:
    """item ref -> the answer it names (prompt, output, reference); unknown refs are left out."""
    groups: dict[str, list[str]] = defaultdict(list)
    targets: dict[str, dict[str, Any]] = {}
    for ref in refs:
        found = _target_of(ref)
        if found:
            groups[found[0]].append(ref)
            targets[found[0]] = found[1]
    out: dict[str, JudgeItem] = {}
    for key, wanted in groups.items():
        target = targets[key]
        if "run_id" in target:
            try:
                got_refs, items = collect_items(store, JudgeTarget(run_id=target["run_id"]))
            except ValueError:
                continue  # the run is gone or has no outputs
        else:
            got_refs, items = teacher_items(store, target["dataset_id"], target["teacher_key"])
        by_ref = dict(zip(got_refs, items, strict=True))
        out.update({r: by_ref[r] for r in wanted if r in by_ref})
    return out


def training_items(store: Store, from_judge: str, use_reference: bool = False) -> list[dict[str, Any]]:
    """Items (:mod:`engine.judges.small.data`) from a judge's verdicts and the SME labels.

    Every answer ``from_judge`` graded accept/reject gives a ``judge`` item; every answer the
    SMEs labelled gives an ``sme`` item (their consensus), which overrides the judge's label of
    the same answer. The text is what the judge saw (with the reference when ``use_reference``).
    """
    # Unparsable and failed replies say nothing about the answer: they teach nothing.
    verdicts = {v["item_ref"]: v for v in store.list_judge_verdicts(from_judge) if v["verdict"] in LABELS}
    sme = sme_labels(store)
    answers = resolve_items(store, sorted(set(verdicts) | set(sme)))
    items: list[dict[str, Any]] = []
    for ref, answer in answers.items():
        text = judge_text(answer.prompt, answer.output, answer.reference if use_reference else None)
        if ref in verdicts:
            items.append({"id": ref, "text": text, "label": verdicts[ref]["verdict"], "source": "judge"})
        if ref in sme:
            items.append({"id": ref, "text": text, "label": sme[ref]["label"], "source": "sme"})
    return items


def launch_training(
    store: Store,
    from_judge: str,
    name: str,
    encoder: str | None = None,
    use_reference: bool = False,
    *,
    actor: Actor,
    **settings: Any,
) -> str:
    """Queue a ``small_judge`` job that learns ``from_judge`` (and the SMEs); returns its id.

    Args:
        store: The workspace.
        from_judge: The judge whose stored verdicts are the teacher.
        name: The small judge's name (its verdicts are saved under it); letters, digits, ``._-``.
        encoder: Hub id or folder of the encoder (None: the bundled MiniLM).
        use_reference: Train (and later judge) on texts that include the reference answer.
        **settings: Other :class:`SmallJudgeSpec` fields (epochs, lr, max_length, ...).

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        engine.specs.SpecError: a bad name or setting (the message names it), or an encoder
            folder outside the model roots (:mod:`engine.training.model_refs`).
        ValueError: fewer than two accepted and two rejected answers to learn from.
    """
    check(store, actor, Right.LAUNCH, "train small judges", name)
    if not _NAME.fullmatch(name):
        raise SpecError(f"small judge: name {name!r}: use letters, digits, '.', '_' and '-' (100 at most)")
    taken = set(store.judge_names()) | {p.name for p in small_judges_dir(store).glob("*") if p.is_dir()}
    if name in taken or name == from_judge:
        # Its verdicts would overwrite that judge's, and a queued retraining would relabel
        # the model in use before the new one exists.
        raise SpecError(
            f"small judge: the name {name!r} is taken by a judge of this workspace; pick a new one"
        )
    # torch and transformers load here, on a click, not when the Calibration page opens.
    from engine.judges.small.model import BUNDLED_ENCODER, SmallJudgeSpec
    from engine.training.model_refs import resolve_model_ref

    try:
        spec = SmallJudgeSpec(name=name, encoder=encoder or BUNDLED_ENCODER, **settings)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "small judge")) from None
    resolve_model_ref(store, spec.encoder, "small_judge.encoder")  # a folder under the model roots
    items = training_items(store, from_judge, use_reference)
    counts = Counter(answer.label for answer in merge_items(items)[0])  # SME labels win
    if min(counts[label] for label in LABELS) < 2:
        raise ValueError(
            f"small judge: {from_judge!r} and the SMEs give {counts['accept']} accepted and "
            f"{counts['reject']} rejected answers; at least 2 of each are needed "
            "(run the judge on more answers)"
        )
    out = small_judges_dir(store) / name
    out.mkdir(parents=True, exist_ok=True)
    items_path = out / "items.jsonl"
    items_path.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    flow = {"from_judge": from_judge, "use_reference": use_reference, "n_items": len(items)}
    (out / FLOW_FILE).write_text(json.dumps(flow, indent=2), encoding="utf-8")
    job_spec = {
        "items_path": str(items_path),
        "small_judge": spec.model_dump(mode="json"),
        "out_dir": str(out),
    }
    job_id = store.enqueue("small_judge", job_spec)
    done(store, actor, "train small judge", job_id, judge=name, from_judge=from_judge)
    return job_id


def trained_on(store: Store, name: str) -> set[str]:
    """Item refs small judge ``name`` learnt from (its training answers, not the held-out ones).

    Calibration leaves them out: a judge agrees with the labels it was fitted to.
    """
    folder = small_judges_dir(store) / name
    try:
        return _jsonl_values(folder / "items.jsonl", "id") - _jsonl_values(folder / "holdout.jsonl", "key")
    except (OSError, ValueError, KeyError):
        return set()


def _jsonl_values(path: Path, field: str) -> set[str]:
    return {str(json.loads(line)[field]) for line in path.read_text().splitlines() if line.strip()}


def calibration_exclusions(store: Store, judges: list[str]) -> set[str]:
    """Refs to leave out when calibrating ``judges``: what any small judge among them learnt from."""
    return set().union(*(trained_on(store, j) for j in judges)) if judges else set()


def trained_small_judges(store: Store) -> list[dict[str, Any]]:
    """Small judges ready to judge: ``name``, ``dir``, ``from_judge``, ``use_reference``, ``report``."""
    out = []
    root = small_judges_dir(store)
    for folder in sorted(root.iterdir()) if root.exists() else []:
        report_path, flow_path = folder / "report.json", folder / FLOW_FILE
        if not (report_path.exists() and (folder / "model").is_dir()):
            continue
        try:
            flow = json.loads(flow_path.read_text()) if flow_path.exists() else {}
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            continue  # a half-written or damaged folder must not break the Calibration page
        out.append(
            {
                "name": report.get("name", folder.name),
                "dir": str(folder),
                "from_judge": flow.get("from_judge"),
                "use_reference": bool(flow.get("use_reference")),
                "report": report,
            }
        )
    return out


def launch_run(store: Store, name: str, target: dict[str, Any], *, actor: Actor) -> str:
    """Queue a ``small_judge_run`` job: small judge ``name`` grades ``target``; returns its id.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        ValueError: no trained small judge of that name, or the target has no answers.
    """
    check(store, actor, Right.LAUNCH, "launch judges", name)
    judge = next((j for j in trained_small_judges(store) if j["name"] == name), None)
    if judge is None:
        raise ValueError(f"no trained small judge named {name!r} in this workspace")
    try:
        tgt = JudgeTarget.model_validate(target)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "judge target")) from None
    collect_items(store, tgt)  # fail now, not in a worker, when there is nothing to judge
    spec = {"judge_dir": judge["dir"], "use_reference": judge["use_reference"], "target": tgt.model_dump()}
    job_id = store.enqueue(RUN_KIND, spec)
    done(store, actor, "launch small judge", job_id, judge=name)
    return job_id


def run_main(ctx: JobContext) -> None:
    """Job entry point (kind ``small_judge_run``): grade the target and save the verdicts.

    Spec: ``{"judge_dir": <folder of a trained small judge>, "use_reference": bool,
    "target": {"run_id": ...} | {"experiment_id": ..., "teacher": true}}``.
    """
    from engine.judges.small.model import SmallJudge

    judge = SmallJudge.load(ctx.spec["judge_dir"])
    target = JudgeTarget.model_validate(ctx.spec["target"])
    refs, items = collect_items(ctx.store, target)
    ctx.progress(0.05, f"{judge.spec.name}: judging {len(items)} answers", force=True)
    verdicts = judge.judge_pointwise(items, use_reference=bool(ctx.spec.get("use_reference")))
    ctx.store.save_judge_verdicts(
        judge.spec.name,
        [
            {"item_ref": r, "verdict": v.verdict, "reason": v.reason}
            for r, v in zip(refs, verdicts, strict=True)
        ],
    )
    accepted = sum(v.accepted for v in verdicts)
    cost = sum(v.cost_usd for v in verdicts)
    message = f"{judge.spec.name}: {accepted}/{len(verdicts)} accepted; ${cost:.6f} of CPU time"
    ctx.store.add_event("info", "judged", message, job_id=ctx.job_id)
    ctx.progress(1.0, message, force=True)


def summary_rows(judges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per trained small judge: what it learnt from, how well, at what cost."""
    rows = []
    for j in judges:
        report, cost = j["report"], j["report"].get("cost") or {}
        rows.append(
            {
                "small judge": j["name"],
                "learnt from": j["from_judge"] or "?",
                "answers": report.get("n_answers"),
                "held-out accuracy": report.get("accuracy"),
                "majority baseline": report.get("majority_baseline_accuracy"),
                "kappa": report.get("kappa"),
                "$ / 1,000 verdicts": cost.get("small_usd_per_1000"),
                "big judge $ / 1,000": cost.get("big_judge_usd_per_1000"),
            }
        )
    return rows
