"""The chat client against the real demo teacher over HTTP on 127.0.0.1 (no SDK patching)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.demo.simulated_teacher import start_demo_teacher
from engine.demo.task import DEMO_SYSTEM_PROMPT, DEMO_TEMPLATE, generate_examples, render_prompt
from engine.specs import TaskSpec, TeacherSpec
from engine.teacher.client import ChatClient, ChatResult, MissingApiKeyError, build_messages

N = 40
TASK = TaskSpec(system_prompt=DEMO_SYSTEM_PROMPT, prompt_template=DEMO_TEMPLATE, output_kind="json")


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return generate_examples(N, seed=11)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory, examples: list[dict]) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "prompts.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": render_prompt(DEMO_TEMPLATE, ex["input"]), "reference": ex["reference"]})
            + "\n"
            for ex in examples
        )
    )
    return path


@pytest.fixture(scope="module")
def clean_teacher(data_file: Path) -> Iterator[str]:
    with start_demo_teacher(data_file, error_rate=0.0) as url:
        yield url


def server_stats(base_url: str) -> dict[str, int]:
    return httpx.get(base_url.removesuffix("/v1") + "/stats", trust_env=False).json()


def requests_for(examples: list[dict]) -> list[list[dict]]:
    return [build_messages(TASK, ex["input"]) for ex in examples]


def test_build_messages() -> None:
    plain = TaskSpec(prompt_template="Q: {input}")
    assert build_messages(plain, "hi") == [{"role": "user", "content": "Q: hi"}]
    system, user = build_messages(TASK, "hi")
    assert system == {"role": "system", "content": DEMO_SYSTEM_PROMPT}
    assert user["content"] == render_prompt(DEMO_TEMPLATE, "hi")


def test_answers_come_back_in_order_then_a_rerun_is_served_from_cache(
    clean_teacher: str, examples: list[dict], tmp_path: Path
) -> None:
    spec = TeacherSpec(kind="demo", concurrency=8, price_input_per_m=2.0, price_output_per_m=10.0)
    client = ChatClient(spec, tmp_path / "cache.db", base_url_override=clean_teacher)
    seen: list[int] = []
    before = server_stats(clean_teacher).get("requests", 0)
    first = client.complete_many(requests_for(examples), on_result=lambda i, r: seen.append(i))

    assert sorted(seen) == list(range(N))
    assert [r.content for r in first] == [ex["reference"] for ex in examples]
    assert all(r.error is None and not r.cached and r.finish_reason == "stop" for r in first)
    assert all(r.input_tokens > 0 and r.output_tokens > 0 and r.latency_s > 0 for r in first)
    for r in first:  # cost = tokens x price per million
        assert r.cost_usd == pytest.approx((r.input_tokens * 2.0 + r.output_tokens * 10.0) / 1e6)
    assert server_stats(clean_teacher)["requests"] - before == N
    assert client.stats["http_requests"] == N

    # A new client on the same cache file: zero HTTP calls, same answers, original tokens, no cost.
    again = ChatClient(spec, tmp_path / "cache.db", base_url_override=clean_teacher)
    second = again.complete_many(requests_for(examples))
    assert server_stats(clean_teacher)["requests"] - before == N
    assert again.stats["http_requests"] == 0 and again.stats["cache_hits"] == N
    assert [r.content for r in second] == [r.content for r in first]
    assert all(r.cached and r.cost_usd == 0.0 for r in second)
    assert [r.input_tokens for r in second] == [r.input_tokens for r in first]
    assert [r.request_hash for r in second] == [r.request_hash for r in first]


def test_sampling_params_are_part_of_the_cache_key(
    clean_teacher: str, examples: list[dict], tmp_path: Path
) -> None:
    cache = tmp_path / "cache.db"
    cold = ChatClient(TeacherSpec(kind="demo"), cache, base_url_override=clean_teacher)
    cold.complete_many(requests_for(examples[:3]))
    hotter = ChatClient(TeacherSpec(kind="demo", temperature=0.7), cache, base_url_override=clean_teacher)
    assert not any(r.cached for r in hotter.complete_many(requests_for(examples[:3])))
    assert hotter.stats["http_requests"] == 3


def test_duplicate_requests_in_a_batch_are_sent_once(clean_teacher: str, examples: list[dict]) -> None:
    client = ChatClient(TeacherSpec(kind="demo"), None, base_url_override=clean_teacher)
    results = client.complete_many(requests_for([examples[0]] * 3))
    assert client.stats["http_requests"] == 1
    assert [r.cached for r in results] == [False, True, True]
    assert len({r.content for r in results}) == 1


def test_max_tokens_cut_is_reported(clean_teacher: str, examples: list[dict]) -> None:
    client = ChatClient(TeacherSpec(kind="demo", max_tokens=5), None, base_url_override=clean_teacher)
    (result,) = client.complete_many(requests_for(examples[:1]))
    assert result.finish_reason == "length" and result.output_tokens <= 5


def test_injected_429_and_500_are_retried_until_every_prompt_is_answered(
    data_file: Path, examples: list[dict]
) -> None:
    spec = TeacherSpec(kind="demo", max_retries=3, concurrency=16)
    with start_demo_teacher(data_file, error_rate=0.0, fail_rate=0.5, retry_after=0.01) as url:
        client = ChatClient(spec, None, base_url_override=url)
        results = client.complete_many(requests_for(examples))
        stats = server_stats(url)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.content for r in results] == [ex["reference"] for ex in examples]
    assert stats["faults_429"] > 0 and stats["faults_500"] > 0
    assert client.stats["http_requests"] == N + stats["faults_429"] + stats["faults_500"]


def test_requests_failing_after_retries_become_error_results(data_file: Path, examples: list[dict]) -> None:
    spec = TeacherSpec(kind="demo", max_retries=1)
    got: list[ChatResult] = []
    with start_demo_teacher(data_file, fail_rate=1.0, retry_after=0.01) as url:
        results = ChatClient(spec, None, base_url_override=url).complete_many(
            requests_for(examples[:6]), on_result=lambda i, r: got.append(r)
        )
    assert len(got) == 6
    assert all(r.content is None and r.error and r.error.startswith("HTTP ") for r in results)
    assert all(r.cost_usd == 0.0 for r in results)


def test_unreachable_endpoint_is_an_error_result_not_an_exception() -> None:
    spec = TeacherSpec(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    (result,) = ChatClient(spec, None).complete_many([[{"role": "user", "content": "hi"}]])
    assert result.content is None and "cannot reach" in (result.error or "")


def test_api_key_comes_from_the_named_env_var_and_is_never_cached(
    clean_teacher: str, examples: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TeacherSpec(base_url=clean_teacher, api_key_env="SENSEI_TEST_TEACHER_KEY")
    monkeypatch.setenv("SENSEI_KEY_ENVS", "SENSEI_TEST_TEACHER_KEY")  # the admin declared the name
    monkeypatch.delenv("SENSEI_TEST_TEACHER_KEY", raising=False)
    with pytest.raises(MissingApiKeyError, match="SENSEI_TEST_TEACHER_KEY"):
        ChatClient(spec, tmp_path / "c.db").complete_many(requests_for(examples[:2]))

    secret = "sk-test-not-a-real-key-123456"
    monkeypatch.setenv("SENSEI_TEST_TEACHER_KEY", secret)
    results = ChatClient(spec, tmp_path / "c.db").complete_many(requests_for(examples[:2]))
    assert all(r.ok for r in results)
    assert all(secret.encode() not in p.read_bytes() for p in tmp_path.iterdir())

    # Fully cached batches need no key at all.
    monkeypatch.delenv("SENSEI_TEST_TEACHER_KEY")
    cached = ChatClient(spec, tmp_path / "c.db").complete_many(requests_for(examples[:2]))
    assert all(r.cached for r in cached)


def test_a_teacher_that_cannot_start_reports_its_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with code 2.*--data:.*nope\.jsonl"),
        start_demo_teacher(missing),
    ):
        pass
