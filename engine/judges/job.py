"""Judge job: an LLM judge grades a run's answers (or the teacher's) and saves its verdicts.

Run by a worker (``python -m engine worker``) as ``main(ctx)`` for job kind ``judge``;
enqueue one with :func:`launch_judge`, or ``store.enqueue("judge", spec)`` where spec is::

    {"judge": {...},                           # a JudgeSpec (name, endpoint, rubric, ...)
     "target": {"run_id": "run_..."}}          # or {"experiment_id": "exp_...", "teacher": true}

Verdicts go to the store under the item refs the Review and Calibration pages read
(``run:<run_id>:<idx>`` or ``teacher:<dataset_id>:<teacher_key>:<idx>``). Calls go through
:class:`engine.teacher.client.ChatClient`, so a re-run is answered from ``<home>/llm_cache.db`` for free.
A ``demo`` endpoint starts the simulated teacher, which also plays a simple judge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from engine.access import Actor, Right, check, done
from engine.context import JobContext
from engine.judges.judge import JudgeItem, JudgeSpec, judge_pointwise
from engine.review import items as review
from engine.specs import ExperimentSpec, Spec, SpecError, TeacherSpec, format_validation_error
from engine.store import Store
from engine.teacher.client import ChatClient, ChatResult
from engine.teacher.keys import require_declared

JOB_KIND = "judge"
KEY_FIELD = "judge.endpoint.api_key_env"
"""How refusals name a judge endpoint's key variable."""


class JudgeTarget(Spec):
    """What the judge grades: one run's outputs, or an experiment's teacher answers."""

    run_id: str | None = None
    """Grade this run's per-example outputs."""
    experiment_id: str | None = None
    """With ``teacher``: grade this experiment's teacher answers."""
    teacher: bool = False
    """Grade the teacher's answers of ``experiment_id`` instead of a run."""

    @model_validator(mode="after")
    def _one_target(self) -> JudgeTarget:
        by_run = self.run_id is not None and self.experiment_id is None and not self.teacher
        by_teacher = self.run_id is None and self.experiment_id is not None and self.teacher
        if not (by_run or by_teacher):
            raise ValueError("give either run_id, or experiment_id with teacher: true")
        return self


class JudgeJobSpec(Spec):
    """The ``judge`` job: which judge, and what it grades."""

    judge: JudgeSpec
    """Judge name, endpoint, rubric and options (pointwise only here)."""
    target: JudgeTarget
    """The answers to grade."""


def _experiment_spec(store: Store, exp_id: str) -> tuple[dict[str, Any], ExperimentSpec]:
    exp = store.get_experiment(exp_id)
    if exp is None:
        raise ValueError(f"no experiment {exp_id!r} in this workspace")
    return exp, ExperimentSpec.model_validate(exp["spec"])


def teacher_items(store: Store, dataset_id: str, teacher_key: str) -> tuple[list[str], list[JudgeItem]]:
    """The item refs and judge items of one teacher's answers on a dataset, in example order."""
    answers = store.get_teacher_responses(dataset_id, teacher_key)
    examples = {e["idx"]: e for e in store.get_examples(dataset_id)}
    idxs = sorted(i for i in answers if i in examples and answers[i].get("output") is not None)
    refs = [review.teacher_ref(dataset_id, teacher_key, i) for i in idxs]
    items = [
        JudgeItem(examples[i]["prompt"], answers[i]["output"], examples[i].get("reference")) for i in idxs
    ]
    return refs, items


def collect_items(store: Store, target: JudgeTarget) -> tuple[list[str], list[JudgeItem]]:
    """The item refs and judge items of ``target``, in example order.

    Raises:
        ValueError: the run or experiment does not exist, or has no answers yet.
    """
    if target.run_id is not None:
        if store.get_run(target.run_id) is None:
            raise ValueError(f"no run {target.run_id!r} in this workspace")
        outputs = store.list_outputs(target.run_id)
        refs = [review.run_ref(target.run_id, o["idx"]) for o in outputs]
        items = [JudgeItem(o["prompt"], o["output"], o["reference"]) for o in outputs]
    else:
        exp, spec = _experiment_spec(store, str(target.experiment_id))
        dataset_id = exp.get("dataset_id")
        if not dataset_id:
            raise ValueError(f"experiment {target.experiment_id!r} has no dataset (teacher not run yet)")
        refs, items = teacher_items(store, dataset_id, spec.teacher_key())
    if not items:
        raise ValueError("nothing to judge: the target has no answers yet")
    return refs, items


def default_endpoint(store: Store, target: JudgeTarget) -> TeacherSpec:
    """The experiment's teacher (of the run's experiment, or of ``target.experiment_id``)."""
    exp_id = target.experiment_id
    if target.run_id is not None:
        run = store.get_run(target.run_id)
        exp_id = run.get("experiment_id") if run else None
    if not exp_id:
        raise ValueError("the target has no experiment, so no teacher to judge with; give an endpoint")
    return _experiment_spec(store, exp_id)[1].teacher


def check_endpoint(endpoint: TeacherSpec) -> TeacherSpec:
    """The endpoint, if a judge job can call it (checked at launch, not in the worker).

    Raises:
        engine.teacher.keys.UndeclaredKeyError: its key name is not declared on this server.
        ValueError: a local model (it cannot judge yet) or an endpoint without a base URL.
    """
    require_declared(endpoint.api_key_env, KEY_FIELD)
    if endpoint.kind == "demo":
        return endpoint
    if endpoint.kind == "local" or not endpoint.base_url:
        raise ValueError(
            "a local teacher cannot judge yet; give the judge an OpenAI-compatible endpoint "
            "(Another endpoint than the experiment's teacher)"
        )
    return endpoint


def launch_judge(
    store: Store,
    target: dict[str, Any],
    rubric: str,
    name: str = "judge",
    endpoint: TeacherSpec | None = None,
    use_reference: bool = False,
    *,
    actor: Actor,
) -> str:
    """Validate a judge run and queue it; the endpoint defaults to the experiment's teacher.

    Args:
        store: the workspace.
        target: ``{"run_id": ...}`` or ``{"experiment_id": ..., "teacher": True}``.
        rubric: what a good answer is.
        name: judge name shown in Review and Calibration.
        endpoint: the judging model; None: the experiment's teacher.
        use_reference: show the reference answer to the judge.

    Returns:
        The job id.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        engine.specs.SpecError: an invalid field (the message names it).
        ValueError: the target does not exist or has no answers.
    """
    check(store, actor, Right.LAUNCH, "launch judges", name)
    try:
        tgt = JudgeTarget.model_validate(target)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "judge target")) from None
    collect_items(store, tgt)  # fail now, not in a worker, when there is nothing to judge
    try:
        judge = JudgeSpec(
            name=name,
            endpoint=check_endpoint(endpoint or default_endpoint(store, tgt)),
            rubric=rubric,
            use_reference=use_reference,
        )
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "judge")) from None
    exp_id = tgt.experiment_id
    if tgt.run_id is not None:
        exp_id = (store.get_run(tgt.run_id) or {}).get("experiment_id")
    spec = JudgeJobSpec(judge=judge, target=tgt).model_dump(mode="json")
    job_id = store.enqueue(JOB_KIND, spec, experiment_id=exp_id)
    done(store, actor, "launch judge", job_id, judge=name, experiment=exp_id)
    return job_id


@contextmanager
def endpoint_url(folder: Path, endpoint: TeacherSpec) -> Iterator[tuple[str, str]]:
    """``(base_url, cache_scope)`` of the judging endpoint; a demo one runs for the block."""
    if endpoint.kind == "demo":
        from engine.demo.simulated_teacher import start_demo_teacher  # only the demo needs FastAPI

        folder.mkdir(parents=True, exist_ok=True)
        data = folder / "demo_judge.jsonl"
        data.write_text("", encoding="utf-8")  # judge prompts are never in a data file
        with start_demo_teacher(data, error_rate=0.0) as url:
            # The port changes every run; the behaviour does not, so cache on the behaviour.
            yield url, "demo-judge"
        return
    url = str(check_endpoint(endpoint).base_url)
    yield url, url.rstrip("/")


def main(ctx: JobContext) -> None:
    """Job entry point: judge every answer of the target and save the verdicts.

    Raises:
        engine.specs.SpecError: the spec is invalid (the message names the field).
        engine.teacher.client.MissingApiKeyError: the endpoint's key variable is not set.
        RuntimeError: every judge call failed.
    """
    for name in ("httpx", "httpx2"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        job = JudgeJobSpec.model_validate(ctx.spec)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "judge job spec")) from None
    store, judge = ctx.store, job.judge
    refs, items = collect_items(store, job.target)
    ctx.log.info("judge %s: %d answers via %s", judge.name, len(items), judge.endpoint.model)
    done = 0

    def on_result(_i: int, _res: ChatResult) -> None:
        nonlocal done
        done += 1
        ctx.progress(0.95 * done / len(items), f"judged {done}/{len(items)}")

    with endpoint_url(store.home / "judges" / ctx.job_id, judge.endpoint) as (url, scope):
        client = ChatClient(
            judge.endpoint,
            store.home / "llm_cache.db",
            base_url_override=url,
            cache_scope=scope,
            key_field=KEY_FIELD,
        )
        verdicts = judge_pointwise(client, judge, items, on_result)
    if all(v.verdict == "error" for v in verdicts):
        raise RuntimeError(f"every judge call failed; first error: {verdicts[0].reason}")
    store.save_judge_verdicts(
        judge.name,
        [
            {"item_ref": ref, "verdict": v.verdict, "reason": v.reason, "raw": v.raw}
            for ref, v in zip(refs, verdicts, strict=True)
        ],
    )
    accepted = sum(v.accepted for v in verdicts)
    unusable = sum(not v.parsed for v in verdicts)
    cost = sum(v.cost_usd for v in verdicts)
    message = (
        f"{judge.name}: {accepted}/{len(verdicts)} accepted, {unusable} unparsable or failed; "
        f"${cost:.4f}; {client.stats['http_requests']} HTTP requests, "
        f"{client.stats['cache_hits']} from cache"
    )
    ctx.log.info(message)
    # The job's last message stays on its row; the event keeps the cost next to the run too.
    store.add_event("info", "judged", message, job_id=ctx.job_id)
    ctx.progress(1.0, message, force=True)


def judge_targets(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """What a judge can grade, for a picker: ``(label, target)``, runs first, newest first."""
    out: list[tuple[str, dict[str, Any]]] = [
        (r["label"], {"run_id": r["id"]}) for r in review.reviewable_runs(store)
    ]
    for exp in store.list_experiments():
        if exp.get("dataset_id"):
            out.append((f"{exp['name']} · teacher answers", {"experiment_id": exp["id"], "teacher": True}))
    return out


def target_options(store: Store) -> dict[str, str]:
    """:func:`judge_targets` for a picker: a stable key per target -> its label.

    A widget keeps its value across reruns; a key names the target itself, where a list
    position would point at another run as soon as a new one appears.
    """
    return {json.dumps(target, sort_keys=True): label for label, target in judge_targets(store)}


def target_of(key: str) -> dict[str, Any]:
    """The judge target a :func:`target_options` key names."""
    return dict(json.loads(key))


def endpoint_from_form(base_url: str, model: str, api_key_env: str | None = None) -> TeacherSpec:
    """An OpenAI-compatible judge endpoint from form fields (the key's variable *name* only).

    Raises:
        engine.specs.SpecError: an invalid field (the message names it).
    """
    try:
        return TeacherSpec(
            kind="openai",
            base_url=base_url.strip() or None,
            model=model.strip(),
            api_key_env=api_key_env or None,
        )
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "judge endpoint")) from None
