"""Teacher job: build the experiment's dataset and have the teacher answer every prompt.

Spec: ``{"experiment": <ExperimentSpec as a dict>}``; the job row names the experiment.
Run by a worker (``python -m engine worker``), which calls :func:`main` with a
:class:`~engine.context.JobContext`.

The job is resumable: an example whose stored answer came from the same request (same
request hash) is skipped, so a killed job re-run continues where it stopped, and a finished
one re-run does nothing. Answers are saved in small batches as they arrive, and the request
cache (``<home>/llm_cache.db``) means even lost batches are not paid for twice.

For ``teacher.kind == "demo"`` the simulated teacher (:mod:`engine.demo.simulated_teacher`) is
started on 127.0.0.1 for the duration of the job; for ``"local"`` a Hugging Face model answers
in this process (:mod:`engine.teacher.local`); ``"openai"`` calls the configured endpoint.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.context import JobContext
from engine.data.datasets import ensure_dataset
from engine.data.validate import parse_output
from engine.redaction import redact_url
from engine.specs import ExperimentSpec, TeacherSpec, parse_spec
from engine.store.artifacts import artifacts
from engine.teacher.breaker import EndpointDownError
from engine.teacher.client import ChatClient, ChatResult, build_messages, request_hash

if TYPE_CHECKING:
    from engine.store import Store
    from engine.teacher.local import LocalTeacher

FLUSH_EVERY = 16
"""Save answers after this many results..."""
FLUSH_SECONDS = 1.0
"""...or after this many seconds, whichever comes first."""


OPENAI_SCOPE = "openai"
"""Cache scope of every ``openai``-kind teacher: its answers depend on the model (or
``teacher.name``), sampling and messages, which the request hash holds, not on its URL."""


def cache_scope(spec: ExperimentSpec, home: Store | Path | str) -> str:
    """What identifies the teacher in request hashes, besides model, sampling and messages.

    The demo teacher's answers depend on its behaviour (error rate and seed); a local model is
    identified by its folder (and a fingerprint of its files) or Hub id and revision; an
    endpoint by nothing more than its model (or ``teacher.name``): not its URL, so a teacher
    moved to another host or port keeps its cached answers.

    Raises:
        engine.training.model_refs.ModelNotAllowed: a local teacher's folder is outside the
            model roots of the workspace ``home``.
    """
    t = spec.teacher
    if t.kind == "demo":
        return f"demo-teacher(error_rate={t.demo_error_rate:g},seed={spec.data.seed})"
    if t.kind == "local":
        from engine.teacher.local import local_scope

        return local_scope(t, home)
    return OPENAI_SCOPE


@contextmanager
def demo_endpoint(folder: Path, spec: ExperimentSpec, rows: list[dict[str, Any]]) -> Iterator[str]:
    """Run the simulated teacher on 127.0.0.1, answering ``rows`` (``prompt``, ``reference``).

    Yields:
        Its base URL (``http://127.0.0.1:<port>/v1``).
    """
    from engine.demo.simulated_teacher import start_demo_teacher  # only the demo needs FastAPI

    folder.mkdir(parents=True, exist_ok=True)
    data_path = folder / "demo_teacher.jsonl"
    with data_path.open("w", encoding="utf-8") as fh:
        for ex in rows:
            if ex.get("reference") is not None:  # others get the demo teacher's generic answer
                fh.write(json.dumps({"prompt": ex["prompt"], "reference": ex["reference"]}) + "\n")
    with start_demo_teacher(data_path, error_rate=spec.teacher.demo_error_rate, seed=spec.data.seed) as url:
        yield url


def teacher_client(
    teacher: TeacherSpec,
    cache_path: Path | None,
    scope: str,
    url: str | None = None,
    api_key: str | None = None,
    *,
    home: Store | Path | str,
) -> ChatClient | LocalTeacher:
    """The client that answers for ``teacher``: a local model or an HTTP endpoint.

    Args:
        teacher: the teacher spec.
        cache_path: the answer cache (usually ``<home>/llm_cache.db``).
        scope: the cache scope (:func:`cache_scope`).
        url: endpoint to call instead of ``teacher.base_url`` (the demo teacher's port).
        api_key: the key itself (playground calls with a Streamlit secret); default: the
            environment variable named by ``teacher.api_key_env``.
        home: the workspace: a local teacher's folder must be under its model roots.
    """
    if teacher.kind == "local":
        from engine.teacher.local import LocalTeacher

        return LocalTeacher(teacher, cache_path, cache_scope=scope, home=home)
    return ChatClient(teacher, cache_path, base_url_override=url, cache_scope=scope, api_key=api_key)


def main(ctx: JobContext) -> None:
    """Answer all prompts of the experiment's dataset (train and test) with its teacher.

    Every answer is saved as it arrives, so a failed job loses nothing: a rerun asks only for
    the prompts that have no answer yet.

    Raises:
        engine.specs.SpecError: the spec is invalid.
        engine.teacher.client.MissingApiKeyError: the teacher's key variable is not set.
        engine.teacher.breaker.EndpointDownError: the endpoint could not be reached for a
            while; the job stopped asking it.
        RuntimeError: more prompts than ``teacher.max_failed_fraction`` of the dataset have no
            answer after retries (default: any), or a local teacher's model cannot be loaded.
            Within the fraction the job succeeds and records a warning event.
    """
    store, log = ctx.store, ctx.log
    # The HTTP library logs one INFO line per request: thousands of lines in the job log.
    # The SDK's own retry messages (logger "openai") stay visible.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    exp_id = ctx.job.get("experiment_id")
    if not exp_id:
        raise ValueError("a teacher job must belong to an experiment (job.experiment_id is empty)")
    spec = parse_spec(ctx.spec.get("experiment"), source="teacher job spec: experiment")
    task, teacher = spec.task, spec.teacher

    dataset_id = ensure_dataset(store, spec)
    store.set_experiment_dataset(exp_id, dataset_id)
    examples = store.get_examples(dataset_id)
    exp_dir = store.experiments_dir / exp_id
    exp_dir.mkdir(parents=True, exist_ok=True)
    if not spec.needs_teacher_answers():
        # Every run trains on the dataset's own answers (student.recipe: gold): nothing to pay for.
        log.info("dataset %s: %d examples; gold recipe: no teacher answers", dataset_id, len(examples))
        summary = {"requested": 0, "answered": 0, "cost_usd": 0.0, "dataset_id": dataset_id}
        summary["total"] = len(examples)
        _write_summary(store, exp_dir, summary)
        ctx.progress(1.0, "gold recipe: no teacher answers needed", force=True)
        return

    scope = cache_scope(spec, store.home)  # checks a local teacher's folder, before it is read
    messages = [build_messages(task, ex["input"]) for ex in examples]
    hashes = [
        request_hash(scope, teacher.identity(), m, teacher.temperature, teacher.max_tokens) for m in messages
    ]
    stored = store.get_teacher_responses(dataset_id, spec.teacher_key())
    # Re-ask an example when it has no answer, its last attempt failed, or the teacher changed.
    todo = [
        k
        for k, ex in enumerate(examples)
        if (r := stored.get(ex["idx"])) is None or r["error"] or r["request_hash"] != hashes[k]
    ]
    total = len(examples)
    done = total - len(todo)
    endpoint = redact_url(teacher.base_url) if teacher.kind == "openai" and teacher.base_url else None
    log.info(
        "dataset %s: %d examples, %d already answered, %d to ask (teacher %s, model %s%s)",
        dataset_id,
        total,
        done,
        len(todo),
        teacher.kind,
        teacher.identity(),
        f" at {endpoint}" if endpoint else "",
    )

    tally = {
        "requested": len(todo),
        "answered": 0,
        "errors": 0,
        "invalid": 0,
        "cached": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }
    first_error: list[str] = []
    pending: list[dict[str, Any]] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if pending:
            store.save_teacher_responses(dataset_id, spec.teacher_key(), pending)
            pending.clear()
        last_flush = time.monotonic()

    def on_result(i: int, res: ChatResult) -> None:
        nonlocal done
        ex = examples[todo[i]]
        valid = parse_output(task, res.content)[0] if res.ok else None
        pending.append(
            {
                "idx": ex["idx"],
                "request_hash": res.request_hash,
                "output": res.content,
                "valid": None if valid is None else int(valid),
                "input_tokens": res.input_tokens,
                "output_tokens": res.output_tokens,
                "latency_s": res.latency_s,
                "cost_usd": res.cost_usd,
                "error": res.error,
            }
        )
        if res.error:
            tally["errors"] += 1
            if not first_error:
                first_error.append(res.error)
        else:
            tally["answered"] += 1
            tally["invalid"] += int(not valid)
            done += 1  # progress counts answered prompts, not attempts
        tally["cached"] += int(res.cached)
        tally["input_tokens"] += res.input_tokens
        tally["output_tokens"] += res.output_tokens
        tally["cost_usd"] += res.cost_usd
        if len(pending) >= FLUSH_EVERY or time.monotonic() - last_flush >= FLUSH_SECONDS:
            flush()
        ctx.progress(done / total, progress_message(done, total, int(tally["errors"]), tally["cost_usd"]))

    http_requests, throttled_s = 0, 0.0
    down: EndpointDownError | None = None
    if todo:
        ctx.progress(done / total, f"teacher {done}/{total} · starting", force=True)
        serving = demo_endpoint(exp_dir, spec, examples) if teacher.kind == "demo" else nullcontext(None)
        with serving as url:
            endpoint = redact_url(url) if url else endpoint
            client = teacher_client(teacher, store.home / "llm_cache.db", scope, url, home=store.home)
            try:
                client.complete_many([messages[k] for k in todo], on_result)
            except EndpointDownError as err:
                down = err  # raised below, once the summary is written
            finally:
                flush()  # keep whatever arrived, even when cancelled or failing
                http_requests, throttled_s = client.stats["http_requests"], client.throttled_s

    summary = {
        **tally,
        "dataset_id": dataset_id,
        "endpoint": endpoint,  # where the answers came from; not part of their identity
        "total": total,
        "http_requests": http_requests,
        "throttled_s": round(throttled_s, 3),
        "cost_usd": round(tally["cost_usd"], 6),
        "unanswered": total - done,
        "endpoint_down": down is not None,
    }
    _write_summary(store, exp_dir, summary)
    log.info(
        "teacher done: %d requested, %d answered (%d invalid, %d cached), %d errors, %d HTTP requests, "
        "%d input + %d output tokens, $%.4f",
        tally["requested"],
        tally["answered"],
        tally["invalid"],
        tally["cached"],
        tally["errors"],
        http_requests,
        tally["input_tokens"],
        tally["output_tokens"],
        tally["cost_usd"],
    )
    missing = total - done
    message = progress_message(done, total, missing, tally["cost_usd"])
    ctx.progress(done / total if total else 1.0, message, force=True)
    if down is not None:
        raise EndpointDownError(
            f"{down}; {done} of {total} prompts are answered and saved, and a rerun asks only for the rest"
        )
    if missing:
        failed = (
            f"teacher: {missing} of {total} prompts ({missing / total:.1%}) have no answer after "
            f"retries; first error: {first_error[0] if first_error else 'none recorded'}"
        )
        if missing > teacher.max_failed_fraction * total:
            needed = math.ceil(1000 * missing / total) / 1000  # rounded up: it must let this run pass
            raise RuntimeError(
                f"{failed}. The {done} answers are saved and a rerun asks only for the missing "
                f"prompts; to train without them, raise teacher.max_failed_fraction "
                f"(now {teacher.max_failed_fraction:g}) to at least {needed:g}"
            )
        log.warning("%s; within teacher.max_failed_fraction, so the job succeeds", failed)
        store.add_event(
            "warning",
            "teacher_failures",
            f"{failed}; within teacher.max_failed_fraction={teacher.max_failed_fraction:g}: training "
            f"uses the {done} answered prompts",
            job_id=ctx.job_id,
        )


def progress_message(answered: int, total: int, failed: int, cost_usd: float) -> str:
    """The job's progress line: answered prompts (never attempts), failures, money spent."""
    failures = f" · {failed} failed" if failed else ""
    return f"teacher {answered}/{total}{failures} · ${cost_usd:.4f}"


def _write_summary(store: Store, exp_dir: Path, summary: dict[str, Any]) -> None:
    """``teacher_summary.json`` of the experiment, here and in ``SENSEI_ARTIFACTS`` (the
    Ablation page's cost per example reads it from any machine)."""
    path = exp_dir / "teacher_summary.json"
    path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    artifacts(store).push(path)
