"""A teacher job with unanswered prompts fails (or warns, within ``teacher.max_failed_fraction``),
and a dead endpoint is given up on quickly; answers are kept and never paid for twice.

Real parts: the simulated teacher on 127.0.0.1 (faults injected, or stopped mid-job) and a
real store. The breaker's time threshold is lowered for speed; its rule is tested on a fake clock.
"""

from __future__ import annotations

import json
import threading
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from engine.data.datasets import ensure_dataset
from engine.demo.simulated_teacher import prompt_key, start_demo_teacher
from engine.specs import ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher import breaker
from engine.teacher import job as teacher_job
from engine.teacher.breaker import EndpointBreaker, EndpointDownError
from tests.test_teacher_job import dataset_of, make_ctx, summary
from tests.test_teacher_keys import dead_url

TOTAL = 140  # the fast demo's prompts


def spec_at(url: str, **teacher: Any) -> ExperimentSpec:
    settings = {"model": "demo-teacher", "max_retries": 0, "timeout_s": 10, **teacher}
    return demo_spec("fast").model_copy(update={"teacher": TeacherSpec(base_url=url, **settings)})


def served(store: Store, **faults: Any) -> AbstractContextManager[str]:
    """The simulated teacher answering the fast demo's prompts (references, no mistakes)."""
    examples = store.get_examples(ensure_dataset(store, demo_spec("fast")))
    data = store.home / "answers.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": e["prompt"], "reference": e["reference"]}) + "\n" for e in examples)
    )
    return start_demo_teacher(data, error_rate=0.0, **faults)


def answered_by(url: str) -> dict[str, int]:
    stats = httpx.get(url.removesuffix("/v1") + "/stats", trust_env=False, timeout=10).json()
    return dict(stats["answers_per_prompt"])


def prompt_keys(store: Store, spec: ExperimentSpec, ctx: Any, ok_only: bool = True) -> set[str]:
    ds = dataset_of(ctx)
    prompts = {e["idx"]: e["prompt"] for e in store.get_examples(ds)}
    answers = store.get_teacher_responses(ds, spec.teacher_key())
    return {prompt_key(prompts[i]) for i, a in answers.items() if not ok_only or a["error"] is None}


@pytest.fixture
def fast_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker, "DOWN_AFTER_S", 1.0)


def test_failed_prompts_fail_the_job_and_reruns_ask_only_for_them(store: Store) -> None:
    with served(store, fail_rate=0.3, retry_after=0.01) as url:
        spec = spec_at(url)  # no retries: every injected 429/500 leaves a prompt unanswered
        ctx = make_ctx(store, spec)
        with pytest.raises(RuntimeError, match=rf"teacher: (\d+) of {TOTAL} prompts .* no answer") as err:
            teacher_job.main(ctx)
        s = summary(ctx)
        missing = s["unanswered"]
        assert 0 < missing == s["errors"] < TOTAL and f"{missing} of {TOTAL}" in str(err.value)
        assert "max_failed_fraction" in str(err.value)
        job = store.get_job(ctx.job_id)
        assert job is not None and job["progress"] < 1.0  # answered prompts, not attempts
        assert job["message"].startswith(f"teacher {TOTAL - missing}/{TOTAL} · {missing} failed")
        first = prompt_keys(store, spec, ctx)
        assert len(first) == TOTAL - missing  # every answer is saved

        # Reruns ask only for the prompts without an answer (the server fails a prompt at most
        # twice in a row, so the third run answers all); nothing is ever answered twice.
        for _ in range(3):
            try:
                teacher_job.main(ctx)
                break
            except RuntimeError:
                continue
        assert summary(ctx)["unanswered"] == 0
        counts = answered_by(url)
        assert len(counts) == TOTAL and set(counts.values()) == {1}


def test_within_max_failed_fraction_the_job_succeeds_with_a_warning(store: Store) -> None:
    with served(store, fail_rate=0.3, retry_after=0.01) as url:
        spec = spec_at(url, max_failed_fraction=0.6)
        assert spec.teacher_key() == spec_at(url).teacher_key()  # an operational knob
        ctx = make_ctx(store, spec)
        teacher_job.main(ctx)  # no exception
    missing = summary(ctx)["unanswered"]
    assert missing > 0
    (event,) = [e for e in store.list_events(job_id=ctx.job_id) if e["kind"] == "teacher_failures"]
    assert event["level"] == "warning" and f"{missing} of {TOTAL} prompts" in event["message"]
    job = store.get_job(ctx.job_id)
    assert job is not None and f"teacher {TOTAL - missing}/{TOTAL} · {missing} failed" in job["message"]


def test_a_dead_endpoint_fails_the_job_without_retrying_every_prompt(
    store: Store, fast_breaker: None
) -> None:
    url = dead_url()
    spec = spec_at(url, max_retries=5)  # 140 prompts x 6 attempts if asked one by one
    ctx = make_ctx(store, spec)
    with pytest.raises(EndpointDownError) as err:
        teacher_job.main(ctx)
    message = str(err.value)
    assert url in message and "unreachable" in message and "0 of 140 prompts are answered" in message
    s = summary(ctx)
    assert s["endpoint_down"] and s["answered"] == 0
    assert s["http_requests"] < TOTAL  # it stopped asking long before every prompt had a try
    job = store.get_job(ctx.job_id)
    assert job is not None and job["progress"] == 0.0 and job["message"].startswith("teacher 0/140")


def test_an_endpoint_killed_mid_job_fails_it_and_the_rerun_pays_only_for_the_rest(
    store: Store, fast_breaker: None
) -> None:
    outcome: dict[str, BaseException] = {}
    with served(store, latency=0.05) as url:
        spec = spec_at(url, max_retries=5, concurrency=4)
        ctx = make_ctx(store, spec)

        def run() -> None:
            try:
                teacher_job.main(ctx)
            except BaseException as err:  # handed to the test thread
                outcome["error"] = err

        worker = threading.Thread(target=run)
        worker.start()
        ds = ensure_dataset(store, spec)
        while len(store.get_teacher_responses(ds, spec.teacher_key())) < 40:
            assert worker.is_alive(), outcome
            threading.Event().wait(0.02)
    # The server is gone now (the with block stopped it).
    worker.join(timeout=120)
    assert not worker.is_alive()
    err = outcome.get("error")
    assert isinstance(err, EndpointDownError), err
    saved = prompt_keys(store, spec, ctx)
    assert 40 <= len(saved) < TOTAL and url in str(err) and f"{len(saved)} of {TOTAL} prompts" in str(err)
    s = summary(ctx)
    assert s["answered"] == len(saved) and s["unanswered"] == TOTAL - len(saved)
    # Without the breaker each of the ~100 remaining prompts would have had 6 attempts.
    assert s["http_requests"] < len(saved) + 40
    job = store.get_job(ctx.job_id)
    assert job is not None and job["message"].startswith(f"teacher {len(saved)}/{TOTAL}")

    # The endpoint comes back on another port: the rerun asks only for what is missing.
    with served(store, latency=0.0) as new_url:
        moved = spec_at(new_url, max_retries=5, concurrency=4)
        teacher_job.main(rerun_ctx(store, ctx, moved))
        again = answered_by(new_url)
    assert set(again).isdisjoint(saved) and len(again) == TOTAL - len(saved)
    assert len(prompt_keys(store, moved, ctx)) == TOTAL


def rerun_ctx(store: Store, ctx: Any, spec: ExperimentSpec) -> Any:
    """A new job of ``ctx``'s experiment with ``spec`` (as a user's rerun would queue it)."""
    from engine.context import JobContext

    job_id = store.enqueue(
        "teacher", {"experiment": spec.model_dump(mode="json")}, experiment_id=ctx.job["experiment_id"]
    )
    job = store.get_job(job_id)
    assert job is not None
    return JobContext(store=store, job=job, spec=job["spec"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_rule_needs_both_attempts_and_time() -> None:
    clock = FakeClock()
    trips: list[int] = []
    b = EndpointBreaker("http://h/v1", on_trip=lambda: trips.append(1), clock=clock)
    refused = ConnectionRefusedError("[Errno 111] Connection refused")
    for _ in range(50):  # a burst of refusals within a second (a restart): not down
        b.failed(b.started(), refused)
    assert not b.tripped
    b.succeeded()  # the endpoint answered (even a 429 would do): the count restarts
    for i in range(7):  # 7 failures spread over 60 s: not enough attempts
        start = b.started()
        clock.now += 10
        b.failed(start, refused)
        assert not b.tripped, i
    start = b.started()
    b.failed(start, refused)  # the 8th, the first of them began 70 s ago
    assert b.tripped and trips == [1]
    assert "http://h/v1" in b.message() and "Connection refused" in b.message()
    b.failed(b.started(), refused)
    assert trips == [1]  # trips once
    assert breaker.DOWN_AFTER_ATTEMPTS == 8 and breaker.DOWN_AFTER_S == 10.0


def test_breaker_trips_on_a_blackholed_endpoint_at_its_first_timeouts() -> None:
    clock = FakeClock()
    b = EndpointBreaker("http://h/v1", clock=clock)
    starts = [b.started() for _ in range(16)]  # 16 attempts in flight, none can connect
    clock.now += 60  # the connect timeout
    for start in starts:
        b.failed(start, TimeoutError("connect timeout"))
    assert b.tripped
