"""Training health: loss spikes and out-of-memory, recorded as run events with advice.

A NaN/inf loss already stops a run (:class:`engine.training.sft.StoreCallback`). This module
adds the softer signals: a loss that jumps well above its recent level (a spike is often the
first sign of a too-high learning rate or a bad batch) and a CUDA out-of-memory error, which
is turned into an event that says what to change rather than a bare traceback.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from transformers import TrainerCallback

from engine.store import Store

SPIKE_FACTOR = 3.0
"""A logged loss above this many times the rolling median is a spike."""
SPIKE_WINDOW = 20
"""Logged losses in the rolling median."""
SPIKE_WARMUP = 5
"""Logged losses seen before spikes are looked for (the first losses fall fast anyway)."""

OOM_ADVICE = (
    "out of GPU memory: lower student.batch_size (and raise student.gradient_accumulation_steps to "
    "keep the effective batch), turn on student.gradient_checkpointing, shorten student.max_length, "
    "train LoRA adapters (student.lora.enabled) or quantize the base (student.quantization: 4bit)"
)


def is_spike(
    history: Sequence[float],
    loss: float,
    factor: float = SPIKE_FACTOR,
    window: int = SPIKE_WINDOW,
    warmup: int = SPIKE_WARMUP,
) -> bool:
    """Whether ``loss`` is a spike: above ``factor`` x the median of the last ``window`` losses.

    Args:
        history: Earlier logged losses, oldest first (non-finite values are ignored).
        loss: The newly logged loss.
        factor: How many times the rolling median counts as a spike.
        window: How many recent losses the median covers.
        warmup: No spike is reported until this many finite losses were seen.

    Returns:
        True for a spike; False during warm-up or for a non-finite ``loss`` (that is divergence,
        handled elsewhere).
    """
    finite = [x for x in history if math.isfinite(x)]
    if len(finite) < warmup or not math.isfinite(loss):
        return False
    median = statistics.median(finite[-window:])
    return median > 0 and loss > factor * median


def is_oom(err: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def oom_message(err: BaseException, batch_size: int | None = None) -> str:
    """The event text for an out-of-memory error: what happened and what to change."""
    where = f" at batch size {batch_size}" if batch_size else ""
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{OOM_ADVICE}{where}. ({first_line[:200]})"


class OutOfMemory(RuntimeError):
    """Training ran out of accelerator memory; the message says what to change."""


@contextmanager
def oom_guard(
    store: Store | None, job_id: str | None, run_id: str | None, batch_size: int | None = None
) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into an ``oom`` event and :class:`OutOfMemory`.

    Args:
        store: The workspace (``None``: raise without recording).
        job_id: The job the event belongs to.
        run_id: The run the event belongs to.
        batch_size: The batch size in use, named in the advice.

    Raises:
        OutOfMemory: The block raised an out-of-memory error (chained to it).
    """
    try:
        yield
    except Exception as err:
        if not is_oom(err):
            raise
        message = oom_message(err, batch_size)
        if store is not None and is_main_process():
            store.add_event("error", "oom", message, job_id=job_id, run_id=run_id)
        raise OutOfMemory(message) from err


def is_main_process() -> bool:
    """True unless this is a non-zero rank under ``accelerate``/``torchrun`` (only rank 0 writes)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


class HealthCallback(TrainerCallback):
    """Records a ``loss_spike`` warning event once per spike.

    A spike is reported when a logged loss jumps above :data:`SPIKE_FACTOR` x the rolling
    median; further high points count as the same spike until the loss comes back under it.

    Args:
        store: The workspace (``None``: keep the spikes in memory only).
        job_id: The job the events belong to.
        run_id: The run the events belong to.
        prefix: Metric prefix of the loss key (``""`` for SFT, ``"dpo/"`` names it in messages).
    """

    def __init__(self, store: Store | None, job_id: str | None, run_id: str | None, prefix: str = ""):
        self.store, self.job_id, self.run_id, self.prefix = store, job_id, run_id, prefix
        self.history: list[float] = []
        self.spikes: list[tuple[int, float]] = []
        self._in_spike = False

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        loss = (logs or {}).get("loss")
        if not isinstance(loss, int | float):
            return
        loss = float(loss)
        spike = is_spike(self.history, loss)
        if spike and not self._in_spike:
            step = int(state.global_step)
            median = statistics.median([x for x in self.history if math.isfinite(x)][-SPIKE_WINDOW:])
            self.spikes.append((step, loss))
            message = (
                f"{self.prefix}loss spiked to {loss:.4g} at step {step} ({loss / median:.1f}x the "
                f"recent median {median:.4g}); if spikes repeat, lower the learning rate"
            )
            if self.store is not None and is_main_process():
                self.store.add_event("warning", "loss_spike", message, job_id=self.job_id, run_id=self.run_id)
        self._in_spike = spike
        # Spikes stay out of the median so one bad batch does not raise the bar for the next.
        if not spike:
            self.history.append(loss)
