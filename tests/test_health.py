"""Training health: loss-spike detection, out-of-memory advice, the rank-0 guard."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from engine.demo.task import DEMO_TEMPLATE, generate_examples
from engine.specs import StudentSpec, TinyModelSpec
from engine.store import Store
from engine.training.health import HealthCallback, OutOfMemory, is_main_process, is_spike, oom_guard
from engine.training.sft import train_sft
from engine.training.student import build_tiny_student, load_student


def test_is_spike_needs_warmup_and_a_jump() -> None:
    assert not is_spike([1.0, 1.0], 10.0)  # still warming up
    history = [1.0, 0.9, 0.8, 0.8, 0.7, 0.7]
    assert not is_spike(history, 2.0)  # < 3x the median (0.75)
    assert is_spike(history, 2.5)
    assert not is_spike(history, float("nan"))  # divergence is handled elsewhere
    assert not is_spike([float("nan")] * 10, 5.0)
    # Only the last `window` losses count: an old high level does not hide a new spike.
    assert is_spike([9.0] * 20 + [0.1] * 20, 0.5, window=20)


def test_health_callback_records_one_event_per_spike(store: Store) -> None:
    callback = HealthCallback(store, "job-1", "run-1")
    losses = [1.0, 0.9, 0.8, 0.8, 0.7, 0.7, 5.0, 6.0, 0.7, 0.6, 4.0]
    for step, loss in enumerate(losses, start=1):
        callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"loss": loss})
    assert [s for s, _ in callback.spikes] == [7, 11]  # 6.0 at step 8 is the same spike
    events = store.list_events(run_id="run-1")
    assert [e["kind"] for e in events] == ["loss_spike", "loss_spike"]
    assert all(e["level"] == "warning" and "lower the learning rate" in e["message"] for e in events)


def test_only_rank_zero_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_oom_guard_passes_other_errors(store: Store) -> None:
    with pytest.raises(KeyError), oom_guard(store, "job-1", "run-1"):
        raise KeyError("x")
    assert store.list_events() == []


class _Oom(TrainerCallback):
    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.slow
def test_oom_in_training_becomes_an_event_with_advice(store: Store, tmp_path: Path) -> None:
    rows = [
        {"prompt": DEMO_TEMPLATE.format(input=ex["input"]), "completion": ex["reference"]}
        for ex in generate_examples(16, seed=1)
    ]
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    tiny = TinyModelSpec(hidden_size=64, num_layers=1, num_heads=4, vocab_size=384)
    model, tok = load_student(build_tiny_student(texts, tiny, tmp_path / "base", seed=0))
    spec = StudentSpec(max_steps=5, batch_size=4, logging_steps=1, save_steps=None)
    guard = oom_guard(store, "job-1", "run-1", spec.batch_size)
    with pytest.raises(OutOfMemory, match=r"lower student\.batch_size") as info, guard:
        train_sft(model, tok, rows, spec, tmp_path / "t", seed=0, callbacks=[_Oom()], report_to=[])
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    (event,) = store.list_events(run_id="run-1")
    assert event["kind"] == "oom" and event["level"] == "error"
    assert "batch size 4" in event["message"] and "gradient_checkpointing" in event["message"]
    assert "Tried to allocate" in event["message"]
