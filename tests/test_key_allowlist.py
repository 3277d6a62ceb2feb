"""API keys come only from names the admin declared in ``SENSEI_KEY_ENVS``.

A spec, a judge, a playground variant, a crafted job row, the CLI and the pages are all
refused when they name any other variable, with the same words whether or not that variable
exists, and nothing is sent: a local endpoint records every Authorization header it gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
from streamlit.testing.v1 import AppTest

from engine import ablation
from engine.context import JobContext
from engine.judges import job as judge_job
from engine.judges.judge import JudgeSpec
from engine.specs import ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.client import ChatClient
from engine.teacher.keys import UndeclaredKeyError, declared_key_envs
from engine.teacher.playground import Variant, launch_teacher_job, run_variant
from tests.actors import ADMIN
from tests.loopback import loopback_server
from tests.review_data import populate
from tests.test_pages import APP, app, texts
from tests.test_teacher_job import make_ctx

ROOT = Path(__file__).resolve().parents[1]
DECLARED = "SENSEI_TEST_DECLARED_KEY"
UNDECLARED = "SENSEI_TEST_UNDECLARED_KEY"
SECRET = "sk-test-never-sent-5555"


@pytest.fixture(autouse=True)
def _declared(monkeypatch: pytest.MonkeyPatch) -> None:
    # Blanks, a pasted key and a phrase are not names: only DECLARED counts.
    monkeypatch.setenv("SENSEI_KEY_ENVS", f" {DECLARED} , ,sk-oops,not a name")


class _Recorder(BaseHTTPRequestHandler):
    """A chat-completions endpoint that answers "ok" and records each Authorization header."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append(str(self.headers.get("authorization")))
        body = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Recorder.seen.clear()
    with loopback_server(_Recorder) as url:
        yield url + "/v1"


def openai_spec(url: str, key_env: str | None) -> ExperimentSpec:
    teacher = TeacherSpec(base_url=url, model="m", api_key_env=key_env, max_retries=0, timeout_s=5)
    return demo_spec("fast").model_copy(update={"teacher": teacher})


def set_undeclared(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """Unset the undeclared variable (``None``) or set it to ``value``."""
    if value is None:
        monkeypatch.delenv(UNDECLARED, raising=False)
    else:
        monkeypatch.setenv(UNDECLARED, value)


def refusals(monkeypatch: pytest.MonkeyPatch, attempt: Callable[[], object]) -> str:
    """The refusal of ``attempt`` with the undeclared variable unset and then set; asserts
    that both are the same and that the value is not in it, and returns it."""
    messages = []
    for value in (None, SECRET):
        set_undeclared(monkeypatch, value)
        with pytest.raises(UndeclaredKeyError) as err:
            attempt()
        messages.append(str(err.value))
    unset, is_set = messages
    assert unset == is_set and SECRET not in unset
    return unset


def test_the_declaration_lists_names_only() -> None:
    assert declared_key_envs() == (DECLARED,)


def test_launch_refuses_an_undeclared_name_and_queues_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    spec = openai_spec(endpoint, UNDECLARED)
    message = refusals(monkeypatch, lambda: ablation.launch_experiment(store, spec, actor=ADMIN))
    assert message == (
        f"teacher.api_key_env: {UNDECLARED} is not an API key name this server declares "
        f"(declared: {DECLARED}); an admin lists the names Sensei may read in the SENSEI_KEY_ENVS "
        "environment variable"
    )
    data = spec.model_dump(mode="json")
    data["ablation"]["vary"] = {"teacher.api_key_env": [DECLARED, UNDECLARED]}
    varied = ExperimentSpec.model_validate(data)
    assert refusals(monkeypatch, lambda: ablation.launch_experiment(store, varied, actor=ADMIN)) == message
    assert refusals(monkeypatch, lambda: launch_teacher_job(store, spec, actor=ADMIN)) == message
    assert store.list_experiments() == [] and store.list_jobs() == []
    # A declared name launches as before.
    assert ablation.launch_experiment(store, openai_spec(endpoint, DECLARED), actor=ADMIN)
    assert _Recorder.seen == []


def test_a_crafted_job_row_is_refused_where_the_worker_reads_the_key(
    store: Store, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    spec = openai_spec(endpoint, UNDECLARED)
    message = refusals(monkeypatch, lambda: teacher_job.main(make_ctx(store, spec)))
    assert message.startswith(f"teacher.api_key_env: {UNDECLARED} is not an API key name")
    assert _Recorder.seen == []  # no request left the worker
    # A declared name is read and sent, as before.
    monkeypatch.setenv(DECLARED, "sk-test-declared-1")
    teacher = openai_spec(endpoint, DECLARED).teacher
    (answer,) = ChatClient(teacher, None).complete_many([[{"role": "user", "content": "hi"}]])
    assert answer.content == "ok" and _Recorder.seen == ["Bearer sk-test-declared-1"]


def test_a_key_handed_in_by_the_playground_needs_a_declared_name_too(
    store: Store, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    # The page hands in a Streamlit secret by the name the user picked; a cached answer
    # does not let an undeclared name through either.
    variant = Variant("A", openai_spec(endpoint, UNDECLARED), api_key="sk-test-secret-from-toml")
    rows = [{"input": "Where is order A12345?", "reference": None}]
    message = refusals(monkeypatch, lambda: run_variant(store, variant, rows))
    assert message.startswith(f"variant A: teacher.api_key_env: {UNDECLARED} is not")
    assert _Recorder.seen == []


def test_judges_are_held_to_the_same_declaration(
    store: Store, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    pop = populate(store, labels=False, judges=False)
    judge_endpoint = judge_job.endpoint_from_form(endpoint, "judge-model", UNDECLARED)
    target = {"run_id": pop.run_id}
    message = refusals(
        monkeypatch,
        lambda: judge_job.launch_judge(store, target, "Correct?", "j", judge_endpoint, actor=ADMIN),
    )
    assert message.startswith(f"judge.endpoint.api_key_env: {UNDECLARED} is not")
    assert [j for j in store.list_jobs() if j["kind"] == "judge"] == []

    # A judge job row written without launch_judge is refused by its worker.
    spec = judge_job.JudgeJobSpec(
        judge=JudgeSpec(name="j", endpoint=judge_endpoint, rubric="Correct?"),
        target=judge_job.JudgeTarget(run_id=pop.run_id),
    ).model_dump(mode="json")
    job_id = store.enqueue(judge_job.JOB_KIND, spec)
    job = store.get_job(job_id)
    assert job is not None
    ctx = JobContext(store=store, job=job, spec=spec)
    assert refusals(monkeypatch, lambda: judge_job.main(ctx)) == message
    assert _Recorder.seen == []


def test_the_cli_refuses_a_spec_naming_an_undeclared_variable(tmp_path: Path, endpoint: str) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(openai_spec(endpoint, UNDECLARED).to_yaml(), encoding="utf-8")
    outputs = []
    for extra in ({}, {UNDECLARED: SECRET}):
        env = {k: v for k, v in os.environ.items() if k != UNDECLARED} | extra
        cmd = [sys.executable, "-m", "engine", "--home", str(tmp_path / "ws"), "launch", str(spec_file)]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        outputs.append(out.stderr)
    assert outputs[0] == outputs[1]
    assert f"teacher.api_key_env: {UNDECLARED} is not an API key name" in outputs[0]
    assert SECRET not in outputs[1]


# -------------------------------------------------------------------------------- pages
def test_the_teacher_page_offers_declared_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UNDECLARED, SECRET)
    at = app("views/teacher.py")
    box = at.selectbox(key="tp.A.teacher.api_key_env")
    assert box.options == ["no key", DECLARED]
    monkeypatch.delenv(DECLARED, raising=False)
    box.set_value(DECLARED).run()
    assert "Key variable: **not set**" in texts(at)  # a declared name may say so
    assert UNDECLARED not in texts(at)


def test_the_teacher_page_refuses_an_undeclared_name_in_its_state(
    monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    """Even a name that reached the session (not through the picker) is refused, in the same
    words whether or not that variable is set, and its status never probes it."""
    shown = []
    for value in (None, SECRET):
        set_undeclared(monkeypatch, value)
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("views/teacher.py")
        at.session_state["tp.A.teacher.kind"] = "openai"
        at.session_state["tp.A.teacher.base_url"] = endpoint
        at.session_state["tp.A.teacher.api_key_env"] = UNDECLARED
        at.run()
        assert "Key variable: **not declared**" in texts(at)
        at.button(key="tp.run").click().run(timeout=60)
        assert not at.exception, [e.value for e in at.exception]
        shown.append(texts(at))
        assert f"variant A: teacher.api_key_env: {UNDECLARED} is not an API key name" in at.error[0].value
        at.button(key="tp.launch.A").click().run()
        assert f"teacher.api_key_env: {UNDECLARED} is not" in at.error[-1].value
    assert shown[0] == shown[1] and SECRET not in shown[1]
    assert _Recorder.seen == []


def test_the_launch_page_picks_declared_names_and_refuses_yaml_with_others(
    store: Store, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    at = app("views/launch.py")
    assert at.selectbox(key="f.teacher.api_key_env").options == ["no key", DECLARED]
    errors = []
    for value in (None, SECRET):
        set_undeclared(monkeypatch, value)
        at.text_area(key="spec_yaml").set_value(openai_spec(endpoint, UNDECLARED).to_yaml())
        at.button(key="yaml_validate").click().run()
        assert f"teacher.api_key_env: {UNDECLARED} is not" in at.error[0].value
        at.button(key="yaml_launch").click().run()
        errors.append(at.error[0].value)
    assert errors[0] == errors[1] and errors[0].startswith("Refused — nothing was queued.")
    assert store.list_jobs() == []
