"""Ask base model, student and teacher the same prompt, side by side (the Compare page).

Students and their base models are asked the way the run trained and evaluated them (its
``metadata.json`` ``prompt_format``): ``raw`` runs get the task's *rendered prompt* as plain
text through ``/v1/completions`` (the tiny student has no chat template); ``chat`` runs get
the task's system prompt and rendered prompt as messages through ``/v1/chat/completions``,
which applies the model's template. The teacher is asked as in the teacher job: chat
messages with the task's system prompt. Calls run in parallel, uncached (this is an
interactive playground), and a failure becomes that column's error, never an exception.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import openai

from engine.access import Actor, Right, check
from engine.data.prompts import render_prompt
from engine.serving import server as serving
from engine.specs import ExperimentSpec, TaskSpec
from engine.store import Store
from engine.store.artifacts import (
    ArtifactsError,
    artifacts,
    artifacts_url,
    pull_run,
    pull_tiny_base,
    run_folder,
)
from engine.teacher.client import build_messages, resolve_api_key
from engine.training.metadata import read_metadata


@dataclass
class Target:
    """One model to ask.

    Attributes:
        label: Column title (``base``, ``student``, ``teacher``).
        base_url: OpenAI-compatible endpoint root; None when the answer is fixed (``note``).
        model: Model name sent with the request.
        mode: ``completion`` (raw rendered prompt) or ``chat`` (system + user messages).
        api_key: The key itself (resolved from the spec's variable name at call time).
        note: Why this target is not asked live, or where its fixed answer comes from.
        fixed_answer: An answer known without a call (the demo teacher's recorded answer).
    """

    label: str
    base_url: str | None
    model: str
    mode: Literal["completion", "chat"] = "completion"
    api_key: str = "EMPTY"
    note: str = ""
    fixed_answer: str | None = None


@dataclass
class Answer:
    """What one target said, how fast, and at what length (or why it said nothing)."""

    label: str
    answer: str | None
    latency_s: float | None
    tokens: int | None
    error: str | None = None
    note: str = ""


def ask(
    target: Target, input_text: str, task: TaskSpec, max_tokens: int = 64, timeout_s: float = 120.0
) -> Answer:
    """Ask one target; errors are returned in :attr:`Answer.error`."""
    if target.base_url is None:
        return Answer(
            target.label,
            target.fixed_answer,
            None,
            None,
            None if target.fixed_answer else target.note,
            target.note,
        )
    client = openai.OpenAI(base_url=target.base_url, api_key=target.api_key, timeout=timeout_s, max_retries=0)
    start = time.perf_counter()
    try:
        if target.mode == "chat":
            chat = client.chat.completions.create(
                model=target.model,
                messages=build_messages(task, input_text),  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=0.0,
            )
            text = chat.choices[0].message.content or ""
            usage = chat.usage
        else:
            done = client.completions.create(
                model=target.model,
                prompt=render_prompt(task.prompt_template, input_text),
                max_tokens=max_tokens,
                temperature=0.0,
            )
            text = done.choices[0].text
            usage = done.usage
    except (openai.OpenAIError, ValueError) as err:
        return Answer(target.label, None, time.perf_counter() - start, None, str(err), target.note)
    tokens = usage.completion_tokens if usage else None
    return Answer(target.label, text.strip(), time.perf_counter() - start, tokens, None, target.note)


def compare(
    input_text: str, targets: list[Target], task: TaskSpec | None = None, max_tokens: int = 64
) -> list[Answer]:
    """Ask every target the same input at once; answers in the order of ``targets``.

    Args:
        input_text: The user's input (rendered with the task's template for each target).
        targets: Who to ask.
        task: The experiment's task (prompt template, system prompt); plain ``{input}`` if None.
        max_tokens: Upper bound on each answer's length.
    """
    task = task or TaskSpec()
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(lambda t: ask(t, input_text, task, max_tokens), targets))


def teacher_target(store: Store, spec: ExperimentSpec, dataset_id: str | None, input_text: str) -> Target:
    """How to get the teacher's answer for ``input_text`` without running a teacher job.

    * ``openai``: its endpoint, with the key from the environment variable the spec names.
    * ``demo``: the simulated teacher only knows the demo prompts, so its *recorded* answer is
      shown when the input is one of the dataset's; otherwise a note says why there is none.
    * ``local``: the teacher model served through ``transformers serve`` like a student.
    """
    t = spec.teacher
    if t.kind == "openai":
        try:
            key = resolve_api_key(t)
        except (RuntimeError, ValueError) as err:  # unset, or a name the server did not declare
            return Target("teacher", None, t.model, note=str(err))
        return Target("teacher", t.base_url, t.model, mode="chat", api_key=key)
    if t.kind == "local":
        key = f"teacher-{spec.fingerprint()}"
        info = serving.ensure_model_server(store, key, t.model, field="teacher.model")
        return Target("teacher", info.base_url, info.model, mode="chat")
    prompt = render_prompt(spec.task.prompt_template, input_text)
    if dataset_id:
        answers = store.get_teacher_responses(dataset_id, spec.teacher_key())
        for ex in store.get_examples(dataset_id):
            if ex["prompt"] == prompt and ex["idx"] in answers:
                return Target(
                    "teacher",
                    None,
                    "demo",
                    fixed_answer=answers[ex["idx"]]["output"],
                    note="recorded answer of the simulated teacher",
                )
    return Target(
        "teacher",
        None,
        "demo",
        note="the simulated demo teacher only answers the demo dataset's prompts; pick a test example",
    )


def base_model_dir(store: Store, experiment_id: str, spec: ExperimentSpec) -> str:
    """What the experiment's runs started from: the shared tiny base, or the student model."""
    if spec.student.model == "tiny":  # trained elsewhere: its base comes from SENSEI_ARTIFACTS
        try:
            return str(pull_tiny_base(store, experiment_id))
        except ArtifactsError as err:
            raise serving.ServeError(f"experiment {experiment_id}: {err}") from None
    return spec.student.model


def experiment_spec(store: Store, experiment_id: str) -> ExperimentSpec:
    """The experiment's saved spec.

    Raises:
        serving.ServeError: the experiment does not exist.
    """
    exp = store.get_experiment(experiment_id)
    if exp is None:
        raise serving.ServeError(f"experiment {experiment_id} does not exist")
    return ExperimentSpec.model_validate(exp["spec"])


def run_mode(store: Store, run_id: str) -> Literal["completion", "chat"]:
    """How a run's student is asked: as it was trained (runs before prompt formats were raw)."""
    run = store.get_run(run_id)
    if run is None:
        return "completion"
    try:
        fmt = read_metadata(pull_run(store, run, names=("metadata.json",))).get("prompt_format")
    except (OSError, ValueError, ArtifactsError):
        return "completion"
    return "chat" if fmt == "chat" else "completion"


def targets_for(
    store: Store, experiment_id: str, run_id: str, input_text: str, *, actor: Actor
) -> list[Target]:
    """Base, student and teacher targets of one run, starting model servers as needed.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch (servers start, the
            teacher is paid).
        serving.ServeError: a model server could not be started.
        engine.training.model_refs.ModelNotAllowed: the experiment's student (or local
            teacher) is a folder outside the model roots.
    """
    check(store, actor, Right.LAUNCH, "ask models", run_id)
    exp = store.get_experiment(experiment_id) or {}
    spec = experiment_spec(store, experiment_id)
    base = serving.ensure_model_server(
        store, f"base-{experiment_id}", base_model_dir(store, experiment_id, spec), field="student.model"
    )
    student = serving.ensure_model_server(store, run_id, serving.run_model_dir(store, run_id))
    mode = run_mode(store, run_id)
    return [
        Target("base", base.base_url, base.model, mode=mode),
        Target("student", student.base_url, student.model, mode=mode),
        teacher_target(store, spec, exp.get("dataset_id"), input_text),
    ]


def example_inputs(store: Store, experiment_id: str, limit: int = 20) -> list[str]:
    """Inputs of the experiment's frozen test split (prompts to try), at most ``limit``."""
    exp = store.get_experiment(experiment_id)
    if not exp or not exp.get("dataset_id"):
        return []
    return [ex["input"] for ex in store.get_examples(exp["dataset_id"], "test")[:limit]]


def servable_runs(store: Store, experiment_id: str) -> list[dict[str, Any]]:
    """Runs of the experiment that saved a model (full or adapter), smallest size first."""
    runs, elsewhere = [], []
    for r in store.list_runs(experiment_id):
        model = run_folder(store, r) / "model"
        if any((model / f).exists() for f in ("config.json", "adapter_config.json")):
            runs.append(r)
        elif r.get("status") == "succeeded":
            elsewhere.append(r)
    if elsewhere and artifacts_url():
        # Trained on another machine: servable once its model is uploaded (metadata.json last).
        # One listing for all of them; an unreachable bucket leaves this machine's runs.
        try:
            uploaded = artifacts(store).names(store.runs_dir)
        except ArtifactsError:
            uploaded = {}
        runs += [r for r in elsewhere if "metadata.json" in uploaded.get(str(r["id"]), set())]
    return sorted(runs, key=lambda r: (r["train_size"] or 0, r["seed"] or 0, r["id"]))


def run_label(run: dict[str, Any]) -> str:
    """``n=200 seed 0 · run-…`` for a run selector."""
    return f"n={run['train_size']} seed {run['seed']} · {run['id']}"
