"""Integration with a real OpenAI-compatible server: ``transformers serve`` on 127.0.0.1.

A tiny Llama (built here, with a minimal chat template, which the server's chat endpoint
needs) is served on CPU with ``HF_HUB_OFFLINE=1``; a teacher job of the openai kind answers a
small demo dataset through it, end to end, with the server's own token counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from engine.demo.task import generate_examples
from engine.specs import AblationSpec, DataSpec, TeacherSpec, TinyModelSpec, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.training.student import build_tiny_student
from tests.loopback import free_port
from tests.test_teacher_job import dataset_of, make_ctx, summary

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).with_name("transformers")
# The server applies the tokenizer's chat template; the tiny tokenizer has none of its own.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(base_url, model folder)`` of a running ``transformers serve``; stopped afterwards."""
    if not CLI.exists():
        pytest.skip("the transformers CLI (transformers[serving]) is not installed")
    root = tmp_path_factory.mktemp("serve")
    texts = [e["input"] + " " + e["reference"] for e in generate_examples(60, seed=3)]
    tiny = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=300)
    folder = build_tiny_student(texts, tiny, root / "tiny", seed=0)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)

    port = free_port()
    cmd = [str(CLI), "serve", str(folder), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not become healthy in 60 s"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1", str(folder)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_teacher_job_through_transformers_serve(served_model: tuple[str, str], store: Store) -> None:
    base_url, folder = served_model
    teacher = TeacherSpec(base_url=base_url, model=folder, max_tokens=8, concurrency=4, timeout_s=30)
    spec = demo_spec("fast").model_copy(
        update={
            "data": DataSpec(demo_examples=30, test_size=5),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
            "teacher": teacher,
        }
    )
    ctx = make_ctx(store, spec)
    teacher_job.main(ctx)

    s = summary(ctx)
    assert s["requested"] == s["answered"] == s["http_requests"] == 30 and s["errors"] == 0
    answers = store.get_teacher_responses(dataset_of(ctx), spec.teacher_key())
    assert sorted(answers) == list(range(30))
    assert all(a["error"] is None and a["output"] is not None for a in answers.values())
    # Token counts are the server's: the prompt is long, the answer at most max_tokens.
    assert all(a["input_tokens"] > 10 and 0 <= a["output_tokens"] <= 8 for a in answers.values())
    assert sum(a["output_tokens"] for a in answers.values()) > 0

    teacher_job.main(ctx)  # everything is stored: no request reaches the server again
    assert summary(ctx)["http_requests"] == 0
