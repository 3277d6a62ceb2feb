"""The local-model teacher: a tiny Llama built in tmp answers in batches, cached, in a job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.data.prompts import render_messages
from engine.demo.task import generate_examples
from engine.specs import AblationSpec, DataSpec, SpecError, TeacherSpec, TinyModelSpec, demo_spec, parse_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.client import build_messages
from engine.teacher.local import LocalTeacher, local_scope
from engine.training.student import build_tiny_student
from tests.test_teacher_job import dataset_of, make_ctx, summary


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [e["input"] + " " + e["reference"] for e in generate_examples(60, seed=3)]
    spec = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=300)
    return build_tiny_student(texts, spec, tmp_path_factory.mktemp("teacher") / "tiny", seed=0)


def local(model: Path, **kw: object) -> TeacherSpec:
    return TeacherSpec(kind="local", model=str(model), max_tokens=8, **kw)  # type: ignore[arg-type]


def chats(n: int) -> list[list[dict]]:
    task = demo_spec("fast").task
    return [build_messages(task, e["input"]) for e in generate_examples(n, seed=5)]


def test_answers_in_batches_with_token_counts_then_from_cache(tiny_model: Path, tmp_path: Path) -> None:
    requests = chats(6)
    client = LocalTeacher(local(tiny_model, concurrency=4), tmp_path / "c.db", home=tmp_path)
    seen: list[int] = []
    first = client.complete_many(requests, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(6)) and client.stats["generated"] == 6
    assert all(r.ok and not r.cached and r.cost_usd == 0.0 for r in first)
    assert all(r.input_tokens > 10 and 0 <= r.output_tokens <= 8 and r.latency_s > 0 for r in first)
    assert all(r.finish_reason in ("stop", "length") for r in first)

    # Left padding: a prompt's answer does not depend on the batch it was generated in.
    one_by_one = LocalTeacher(local(tiny_model, concurrency=1), None, home=tmp_path).complete_many(requests)
    assert [r.content for r in one_by_one] == [r.content for r in first]

    again = LocalTeacher(local(tiny_model, concurrency=4), tmp_path / "c.db", home=tmp_path)
    second = again.complete_many(requests)
    assert again.stats["generated"] == 0 and again.stats["cache_hits"] == 6
    assert [r.content for r in second] == [r.content for r in first]
    assert [r.input_tokens for r in second] == [r.input_tokens for r in first]


def test_scope_follows_the_folder_contents_and_hub_revision(tiny_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_model.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    before = local_scope(local(copy), tmp_path)
    assert before.startswith(f"local:{copy.resolve()}#") and local_scope(local(copy), tmp_path) == before
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text() + " ")  # "retrained in place"
    os.utime(cfg, ns=(1, 1))
    assert local_scope(local(copy), tmp_path) != before
    assert local_scope(local(Path("org/model"), revision="abc"), tmp_path) == "hf:org/model@abc"


def test_chat_template_is_used_when_the_tokenizer_has_one(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_messages(tok, msgs) == "S\n\nU"
    tok.chat_template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<a>"
    # The template writes its own BOS; the text is tokenized as is (add_special_tokens=False).
    assert render_messages(tok, msgs) == "<s><system>S<user>U<a>"


def test_local_teachers_decode_greedily() -> None:
    with pytest.raises(SpecError, match="temperature: a local teacher decodes greedily"):
        parse_spec({"teacher": {"kind": "local", "model": "x", "temperature": 0.7}})


@pytest.mark.slow
def test_teacher_job_with_a_local_model(tiny_model: Path, store: Store) -> None:
    spec = demo_spec("fast").model_copy(
        update={
            "data": DataSpec(demo_examples=30, test_size=5),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
            "teacher": local(tiny_model, concurrency=16),
        }
    )
    ctx = make_ctx(store, spec)
    teacher_job.main(ctx)
    s = summary(ctx)
    assert s["requested"] == s["answered"] == 30 and s["errors"] == 0
    assert s["http_requests"] == 0 and s["throttled_s"] == 0
    answers = store.get_teacher_responses(dataset_of(ctx), spec.teacher_key())
    assert len(answers) == 30
    assert all(a["error"] is None and a["input_tokens"] > 0 and a["cost_usd"] == 0 for a in answers.values())

    teacher_job.main(ctx)  # resumed / re-run: nothing left to generate
    assert summary(ctx)["requested"] == 0
