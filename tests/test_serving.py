"""A run's student served through ``transformers serve`` (engine.serving.server) and asked via compare()."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.demo.task import generate_examples
from engine.jobs import process_alive
from engine.serving import compare
from engine.serving import server as serving
from engine.specs import TaskSpec, TinyModelSpec
from engine.store import Store
from engine.training.student import build_tiny_student
from tests.actors import ADMIN

pytestmark = pytest.mark.slow


def test_serve_a_run_ask_it_and_stop(store: Store, tmp_path: Path) -> None:
    if not Path(serving.serve_program()).exists():
        pytest.skip("the transformers CLI (transformers[serving]) is not installed")
    run_id = _add_run(store)
    run_dir = store.runs_dir / run_id
    texts = [e["input"] + " " + e["reference"] for e in generate_examples(40, seed=1)]
    tiny = TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, vocab_size=300)
    build_tiny_student(texts, tiny, run_dir / "model", seed=0)

    try:
        base_url = serving.ensure_server(store, run_id, timeout_s=60)
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        info = serving.read_server(store, run_id)
        assert info is not None and [s.key for s in serving.list_servers(store)] == [run_id]
        # A second call (another Streamlit rerun) finds the same server instead of a new one.
        assert serving.ensure_server(store, run_id) == base_url

        target = compare.Target("student", base_url, info.model)
        (answer,) = compare.compare("Order 123 never arrived", [target], TaskSpec(), max_tokens=6)
        assert answer.error is None and answer.answer is not None
        assert answer.tokens is not None and 0 < answer.tokens <= 6 and answer.latency_s is not None
    finally:
        assert serving.stop_all(store, actor=ADMIN) == 1
    assert not process_alive(info.pid, info.started_at)
    assert serving.list_servers(store) == [] and serving.stop_server(store, run_id) is False


def test_a_server_that_cannot_start_reports_its_log(store: Store, tmp_path: Path) -> None:
    if not Path(serving.serve_program()).exists():
        pytest.skip("the transformers CLI (transformers[serving]) is not installed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(serving.ServeError, match=r"transformers serve for .*empty") as err:
        serving.start_server(store, "broken", tmp_path / "empty", timeout_s=60)
    assert "\n" in str(err.value)  # the log's tail follows the first line
    assert serving.list_servers(store) == []


def test_a_run_without_a_model_is_refused(store: Store) -> None:
    run_id = _add_run(store)
    with pytest.raises(serving.ServeError, match="no saved model"):
        serving.ensure_server(store, run_id)
    with pytest.raises(serving.ServeError, match="does not exist"):
        serving.ensure_server(store, "run-missing")


def test_unknown_demo_prompt_gets_a_note_not_an_error() -> None:
    target = compare.Target("teacher", None, "demo", note="only the demo prompts")
    (answer,) = compare.compare("anything", [target])
    assert answer.answer is None and answer.error == "only the demo prompts"
    fixed = compare.Target("teacher", None, "demo", fixed_answer='{"a": 1}', note="recorded")
    assert compare.compare("x", [fixed])[0].answer == '{"a": 1}'


def _add_run(store: Store) -> str:
    with store.tx() as conn:
        return store.add_run(conn, None, 16, 0)


def test_an_adapter_run_is_served_as_a_merged_copy(store: Store, tmp_path: Path) -> None:
    from peft import get_peft_model

    from engine.specs import LoraSpec
    from engine.training.student import load_student, lora_config, save_student

    texts = [e["input"] + " " + e["reference"] for e in generate_examples(20, seed=2)]
    tiny = TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, vocab_size=300)
    base = build_tiny_student(texts, tiny, tmp_path / "base", seed=0)
    model, tok = load_student(base, device="cpu")
    peft_model = get_peft_model(model, lora_config(LoraSpec(enabled=True, r=4)))
    run_id = _add_run(store)
    run_dir = store.runs_dir / run_id
    save_student(peft_model, tok, run_dir / "model")
    assert (run_dir / "model" / "adapter_config.json").exists()

    served = serving.run_model_dir(store, run_id)
    assert served == run_dir / "served" and (served / "config.json").exists()
    assert not (served / "adapter_config.json").exists()
    assert serving.run_model_dir(store, run_id) == served  # merged once, then reused
