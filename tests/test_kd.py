"""Token-level KD: our loss is TRL's loss, the on-policy fraction, the tokenizer check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trl import DistillationConfig, DistillationTrainer

from engine.specs import SpecError, StudentSpec, TinyModelSpec
from engine.training.kd import SenseiDistillationTrainer, kd_config, require_shared_tokenizer, train_kd
from engine.training.student import build_tiny_student, load_student

pytestmark = pytest.mark.slow

TEACHER = TinyModelSpec(hidden_size=96, num_layers=3, num_heads=4, vocab_size=384)


@pytest.fixture(scope="module")
def teacher_dir(
    tiny_demo: tuple[Path, list[dict[str, str]]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A wider, deeper (untrained) Llama that shares the tiny student's tokenizer."""
    base, _ = tiny_demo
    _, tokenizer = load_student(base, device="cpu")
    return build_tiny_student([], TEACHER, tmp_path_factory.mktemp("teacher"), seed=7, tokenizer=tokenizer)


def _spec(**kd: float) -> StudentSpec:
    return StudentSpec(
        budget="steps", max_steps=4, batch_size=4, learning_rate=3e-3, logging_steps=1, max_new_tokens=64,
        save_steps=None, kd={"lmbda": 0.0, **kd},
    )  # fmt: skip


@pytest.mark.parametrize(("beta", "temperature"), [(0.0, 1.0), (0.5, 1.0), (1.0, 2.0), (0.3, 0.7)])
def test_our_kd_loss_equals_trls_on_a_fixed_batch(
    tiny_demo: tuple[Path, list[dict[str, str]]],
    teacher_dir: Path,
    tmp_path: Path,
    beta: float,
    temperature: float,
) -> None:
    base, rows = tiny_demo
    spec = _spec(beta=beta, temperature=temperature)
    losses, grads = [], []
    for ours in (True, False):
        student, tok = load_student(base, device="cpu")
        teacher, _ = load_student(teacher_dir, device="cpu")
        if ours:
            args = kd_config(spec, tmp_path / "ours", seed=0, report_to=[])
            trainer: DistillationTrainer = SenseiDistillationTrainer(
                model=student, teacher_model=teacher, args=args, processing_class=tok, lmbda=0.0
            )
            batch = trainer.teacher_forced_batch(rows[:6])  # type: ignore[attr-defined]
        else:  # TRL as it ships, same divergence settings
            args = DistillationConfig(
                output_dir=str(tmp_path / "trl"),
                use_cpu=True,
                report_to=[],
                beta=beta,
                temperature=temperature,
            )
            trainer = DistillationTrainer(
                model=student, teacher_model=teacher, args=args, processing_class=tok
            )
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    assert batch["completion_mask"].sum() < batch["completion_mask"].numel()  # padding is really there
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_lmbda_zero_never_generates_and_one_always_does(
    tiny_demo: tuple[Path, list[dict[str, str]]],
    teacher_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, rows = tiny_demo
    calls: list[int] = []
    real = DistillationTrainer._generate

    def counted(self: DistillationTrainer, prompts: list) -> object:
        calls.append(len(prompts))
        return real(self, prompts)

    monkeypatch.setattr(DistillationTrainer, "_generate", counted)
    for lmbda, want in ((0.0, 0), (1.0, 3)):
        student, tok = load_student(base, device="cpu")
        teacher, _ = load_student(teacher_dir, device="cpu")
        spec = _spec(lmbda=lmbda)
        spec.max_steps = 3
        result = train_kd(student, teacher, tok, rows[:32], spec, tmp_path / str(lmbda), seed=0, report_to=[])
        assert len(calls) == want
        assert result.info == {"on_policy_batches": want, "forced_batches": 3 - want}
        assert result.steps == 3 and result.tokens_seen > 0
        calls.clear()


def test_kd_from_scratch_lowers_the_divergence(
    tiny_demo: tuple[Path, list[dict[str, str]]], teacher_dir: Path, tmp_path: Path
) -> None:
    base, rows = tiny_demo
    student, tok = load_student(base, device="cpu")
    teacher, _ = load_student(teacher_dir, device="cpu")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    spec = _spec(beta=0.5)
    spec.max_steps = 12
    result = train_kd(student, teacher, tok, rows, spec, tmp_path, seed=0, report_to=[])
    assert result.final_loss < result.first_loss
    assert any(not torch.equal(before[k], v) for k, v in result.model.state_dict().items())


def test_a_teacher_with_another_tokenizer_is_refused(tiny_demo: tuple[Path, list[dict[str, str]]]) -> None:
    from engine.training.student import build_tiny_tokenizer

    base, rows = tiny_demo
    _, tok = load_student(base, device="cpu")
    other = build_tiny_tokenizer([r["completion"] for r in rows], 300)
    require_shared_tokenizer(tok, tok, "same")
    with pytest.raises(
        SpecError, match=r"teacher\.model: KD needs a teacher sharing the student's tokenizer"
    ):
        require_shared_tokenizer(tok, other, "other")


def test_kd_early_stopping_validates_on_the_teachers_answers(
    tiny_demo: tuple[Path, list[dict[str, str]]], teacher_dir: Path, tmp_path: Path
) -> None:
    base, rows = tiny_demo
    student, tok = load_student(base, device="cpu")
    teacher, _ = load_student(teacher_dir, device="cpu")
    spec = _spec(lmbda=0.0)
    spec.budget, spec.max_steps, spec.eval_steps, spec.patience = "early_stop", 6, 2, 1
    result = train_kd(
        student, teacher, tok, rows[:40], spec, tmp_path, seed=0, report_to=[], eval_rows=rows[40:48]
    )
    assert result.best_eval_loss is not None and result.stop_reason in ("early_stop", "max_steps")
    assert result.best_step in (2, 4, 6) and result.info["on_policy_batches"] == 0
