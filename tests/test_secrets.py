"""A planted API key never lands on disk: not in the store, logs, cache, W&B files or exports.

The key is put in the environment variable that the teacher spec *names* (and the admin
declared in ``SENSEI_KEY_ENVS``); teacher jobs run in real worker subprocesses (one against
the demo teacher, one against an endpoint that echoes the key back in its error message, one
naming a set but undeclared variable), a W&B offline run records the spec, and then every
file under the test's folder is searched, byte by byte, for either key.

Sign-in secrets likewise: with ``client_secret`` and ``cookie_secret`` planted in the ``[auth]``
secrets and an ID token in ``st.user``, users sign in, label, launch, cancel and are refused
(all of it in the audit log), and neither secret nor token is in any file, nor in the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest

from engine import jobs
from engine.access import AccessDenied, sign_in
from engine.data.datasets import ensure_dataset
from engine.demo.simulated_teacher import start_demo_teacher
from engine.review.items import annotations_jsonl
from engine.specs import AblationSpec, DataSpec, ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher.client import ChatClient
from tests.loopback import loopback_server
from tests.test_teacher_job import make_ctx

pytestmark = pytest.mark.slow

KEY = "sk-test-PLANTED-0123456789"
KEY_ENV = "SENSEI_TEST_KEY_VAR"
OTHER = "sk-test-UNDECLARED-9876543210"
OTHER_ENV = "SENSEI_TEST_UNDECLARED_VAR"  # set on the server, but not declared in SENSEI_KEY_ENVS


class _EchoKey(BaseHTTPRequestHandler):
    """An endpoint that refuses every request and quotes the Authorization header back."""

    seen: ClassVar[list[str]] = []  # every Authorization header received, in order

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append(str(self.headers.get("authorization")))
        body = json.dumps({"error": {"message": f"Incorrect API key: {self.headers.get('authorization')}"}})
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    with loopback_server(_EchoKey) as url:
        yield url + "/v1"


def small_spec(base_url: str) -> ExperimentSpec:
    teacher = TeacherSpec(base_url=base_url, model="demo-teacher", api_key_env=KEY_ENV, max_retries=1)
    return demo_spec("fast").model_copy(
        update={
            "data": DataSpec(demo_examples=30, test_size=5),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
            "teacher": teacher,
        }
    )


def run_teacher_worker(store: Store, spec: ExperimentSpec) -> dict[str, Any]:
    job = make_ctx(store, spec).job  # an experiment with one queued teacher job
    job_id = job["id"]
    proc = jobs.spawn_worker(store, job)
    assert proc is not None
    proc.wait(timeout=120)
    done = store.get_job(job_id)
    assert done is not None
    return done


def files_containing(root: Path, secret: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_a_planted_key_appears_in_no_file(
    cleanup_processes: Store, tmp_path: Path, echo_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cleanup_processes
    monkeypatch.setenv(KEY_ENV, KEY)  # the workers inherit it, as from the user's shell
    monkeypatch.setenv("SENSEI_KEY_ENVS", KEY_ENV)  # and the admin's declaration of its name
    monkeypatch.setenv("WANDB_DIR", str(store.home / "wandb"))

    # 1. A successful job through a worker, against the demo teacher (an openai-kind endpoint).
    ds = ensure_dataset(store, small_spec("http://placeholder/v1"))
    data = tmp_path / "answers.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": e["prompt"], "reference": e["reference"]}) + "\n"
            for e in store.get_examples(ds)
        )
    )
    with start_demo_teacher(data, error_rate=0.0) as url:
        ok = run_teacher_worker(store, small_spec(url))
    assert ok["status"] == "succeeded", ok

    # 2. A failing job against an endpoint that quotes the key in its error: scrubbed everywhere.
    # Another teacher (answers are keyed on the model, not the URL: same name, same answers).
    spec = small_spec(echo_server)
    bad_spec = spec.model_copy(update={"teacher": spec.teacher.model_copy(update={"name": "echo-teacher"})})
    bad = run_teacher_worker(store, bad_spec)
    assert bad["status"] == "failed" and "Incorrect API key: Bearer ***" in bad["error"], bad["error"]
    (result,) = ChatClient(bad_spec.teacher, None).complete_many([[{"role": "user", "content": "hi"}]])
    assert result.error and KEY not in result.error and "***" in result.error

    # 2b. A crafted job naming a variable the admin did not declare: the worker refuses it
    # before reading it, so its value is never sent, logged or stored.
    monkeypatch.setenv(OTHER_ENV, OTHER)
    _EchoKey.seen.clear()
    other_teacher = bad_spec.teacher.model_copy(update={"api_key_env": OTHER_ENV, "name": "other-teacher"})
    refused = run_teacher_worker(store, bad_spec.model_copy(update={"teacher": other_teacher}))
    assert refused["status"] == "failed" and f"{OTHER_ENV} is not an API key name" in refused["error"]
    assert _EchoKey.seen == []  # not a single request left the worker

    # 3. A W&B offline run with the experiment's spec as its config, as a training run makes.
    from engine.training import tracking

    run = tracking.start_run(store.home, "secret-check", "exp", bad_spec.model_dump(mode="json"))
    tracking.finish_run(run, {"field_accuracy": 0.5})
    assert run is None or any((store.home / "wandb").rglob("*.wandb"))

    # 4. The export that exists today (SME labels as JSONL), written into the workspace.
    (store.home / "labels.jsonl").write_text(annotations_jsonl(store), encoding="utf-8")

    assert (store.home / "llm_cache.db").exists() and any(store.logs_dir.iterdir())
    assert files_containing(tmp_path, KEY.encode()) == []
    assert files_containing(tmp_path, b"PLANTED-01") == []  # not even a fragment
    assert files_containing(tmp_path, b"UNDECLARED-98") == []


CLIENT_SECRET = "oidc-client-PLANTED-4242"
COOKIE_SECRET = "oidc-cookie-PLANTED-4242"
ID_TOKEN = "eyJ-id-token-PLANTED-4242"


def test_sign_in_secrets_appear_in_no_file_and_not_in_the_audit_log(store: Store, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.actors import ADMIN
    from tests.test_pages import APP, AUTH_SECRETS, ROLE_CLAIM

    auth = {"auth": {**AUTH_SECRETS["auth"], "client_secret": CLIENT_SECRET, "cookie_secret": COOKIE_SECRET}}
    (store.home / "roles.toml").write_text(f'roles_claim = "{ROLE_CLAIM}"\n', encoding="utf-8")

    def session(sub: str, role: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.secrets = auth
        at.user = {
            "is_logged_in": True,
            "sub": sub,
            "name": sub.title(),
            "email": f"{sub}@example.com",
            ROLE_CLAIM: role,
            "tokens": {"id": ID_TOKEN},  # what expose_tokens would add: never stored
        }
        return at.run()

    lena = session("lena", "launcher")
    lena.button[[b.label for b in lena.button].index("Run the demo")].click().run()  # a launch
    assert not lena.exception, [e.value for e in lena.exception]
    exp_id = store.list_experiments()[0]["id"]
    lena.switch_page("views/runs.py").run()
    next(b for b in lena.button if b.label == "Cancel experiment").click().run()  # a cancel
    assert {j["status"] for j in store.list_jobs(experiment_id=exp_id)} == {"cancelled"}
    vic = session("vic", "viewer")
    with pytest.raises(AccessDenied):
        jobs.cancel_experiment(store, exp_id, actor=sign_in(store, {"sub": "vic", ROLE_CLAIM: "viewer"}))
    assert not vic.exception
    boss = session("boss", "admin")
    boss.switch_page("views/access.py").run()
    assert not boss.exception, [e.value for e in boss.exception]

    log = store.audit_log(actor=ADMIN)
    assert {"first sign-in", "launch", "cancel"} <= {r["action"] for r in log}
    assert any(r["outcome"] == "refused" for r in log)
    text = json.dumps(log)
    for planted in (CLIENT_SECRET, COOKIE_SECRET, ID_TOKEN):
        assert planted not in text
        assert files_containing(tmp_path, planted.encode()) == []
    assert files_containing(tmp_path, b"PLANTED-4242") == []  # not even a fragment
