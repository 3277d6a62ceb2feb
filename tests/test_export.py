"""Run artifacts: adapters load only on their own base, merged exports load without PEFT,
quantization and precision are decided (or refused) up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.demo.task import DEMO_TEMPLATE, generate_examples
from engine.specs import LoraSpec, StudentSpec, TinyModelSpec, demo_spec
from engine.store import Store
from engine.training.export import ArtifactMismatch, check_compatible, load_run_model, merge_run
from engine.training.generate import generate
from engine.training.metadata import base_model_record, build_metadata, write_json
from engine.training.sft import sft_config, train_sft
from engine.training.student import (
    QuantizationUnavailable,
    build_tiny_student,
    load_student,
    resolve_precision,
    save_student,
)

TINY = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [
        {"prompt": DEMO_TEMPLATE.format(input=ex["input"]), "completion": ex["reference"]}
        for ex in generate_examples(80, seed=2)
    ]


@pytest.fixture(scope="module")
def lora_run(rows: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A base folder and a run folder holding a briefly trained LoRA adapter + metadata."""
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
    base_dir = build_tiny_student(texts, TINY, tmp_path_factory.mktemp("base"), seed=0)
    run_dir = tmp_path_factory.mktemp("run")
    lora = LoraSpec(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    # A large LoRA learning rate: the adapter must visibly change the answers.
    spec = StudentSpec(max_steps=12, batch_size=8, learning_rate=2e-2, lora=lora, save_steps=None)
    model, tok = load_student(base_dir, device="cpu")
    result = train_sft(model, tok, rows[:64], spec, run_dir / "trainer", seed=0, report_to=[])
    save_student(result.model, tok, run_dir / "model")
    meta = build_metadata(
        base=base_model_record(base_dir, None),
        lora=lora.model_dump(mode="json"),
        dataset_id="ds-x",
        dataset_hash="abc",
        teacher_key=None,
        train_indices=list(range(64)),
        train_size=64,
        seed=0,
        train={"final_loss": result.final_loss, "steps": result.steps},
    )
    write_json(run_dir / "metadata.json", meta)
    return base_dir, run_dir


def test_merged_export_loads_without_peft(
    rows: list[dict[str, str]], lora_run: tuple[Path, Path], tmp_path: Path
) -> None:
    base_dir, run_dir = lora_run
    prompts = [r["prompt"] for r in rows[64:72]]
    adapted, tok = load_run_model(run_dir, device="cpu")
    expected = generate(adapted, tok, prompts, max_new_tokens=24)
    base, base_tok = load_student(base_dir, device="cpu")
    assert generate(base, base_tok, prompts, max_new_tokens=24) != expected  # the adapter matters

    out = merge_run(run_dir, tmp_path / "export", metrics={"field_accuracy": 0.5})
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert json.loads((out / "metadata.json").read_text()) == json.loads(
        (run_dir / "metadata.json").read_text()
    )
    card = (out / "README.md").read_text()
    assert (
        "field_accuracy" in card and "AutoModelForCausalLM.from_pretrained" in card and str(base_dir) in card
    )

    plain = AutoModelForCausalLM.from_pretrained(out)
    plain_tok = AutoTokenizer.from_pretrained(out)
    assert type(plain).__module__.startswith("transformers.")
    assert generate(plain, plain_tok, prompts, max_new_tokens=24) == expected
    with pytest.raises(FileExistsError):
        merge_run(run_dir, out)


def test_changed_base_weights_are_refused(lora_run: tuple[Path, Path], tmp_path: Path) -> None:
    base_dir, run_dir = lora_run
    check_compatible(run_dir)  # the recorded base still matches
    altered = tmp_path / "altered"
    shutil.copytree(base_dir, altered)
    model = AutoModelForCausalLM.from_pretrained(altered)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(altered)
    with pytest.raises(ArtifactMismatch, match="base weights: content hash") as err:
        load_run_model(run_dir, base_model_ref=altered)
    assert str(altered) in str(err.value)


def test_changed_lora_targets_are_refused(lora_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = lora_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("trainer"))
    meta = json.loads((copy / "metadata.json").read_text())
    meta["lora"]["target_modules"] = ["q_proj"]
    meta["lora"]["r"] = 16
    write_json(copy / "metadata.json", meta)
    with pytest.raises(ArtifactMismatch) as err:
        check_compatible(copy)
    assert "LoRA target modules" in str(err.value) and "LoRA rank" in str(err.value)


def test_resolve_precision() -> None:
    assert resolve_precision("auto", cuda_available=False, bf16_supported=False) == "fp32"
    assert resolve_precision("auto", cuda_available=True, bf16_supported=True) == "bf16"
    assert resolve_precision("auto", cuda_available=True, bf16_supported=False) == "fp16"
    assert resolve_precision("fp32", cuda_available=True, bf16_supported=True) == "fp32"
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cuda_available=False, bf16_supported=False)
    with pytest.raises(ValueError, match="no bf16 support"):
        resolve_precision("bf16", cuda_available=True, bf16_supported=False)


def test_spec_fields_reach_the_trainer_config(tmp_path: Path) -> None:
    spec = StudentSpec(
        gradient_accumulation_steps=4, gradient_checkpointing=True, packing=True, save_steps=None
    )
    cfg = sft_config(spec, tmp_path, seed=0, report_to=[])
    assert cfg.gradient_accumulation_steps == 4 and cfg.activation_checkpointing
    assert cfg.packing and cfg.packing_strategy == "bfd" and cfg.max_length == spec.max_length
    assert cfg.lr_scheduler_type == "cosine" and cfg.warmup_steps == spec.warmup_ratio
    if not torch.cuda.is_available():
        assert not cfg.bf16 and not cfg.fp16
    # Padding-free without packing: TRL would refuse a max_length it cannot enforce.
    assert sft_config(StudentSpec(padding_free=True), tmp_path, 0, []).max_length is None


def test_quantization_needs_lora() -> None:
    with pytest.raises(ValidationError, match=r"set lora\.enabled: true or quantization: none"):
        StudentSpec(quantization="4bit")
    assert StudentSpec(quantization="8bit", lora=LoraSpec(enabled=True)).quantization == "8bit"


@no_cuda
def test_quantization_without_cuda_is_a_clear_error(lora_run: tuple[Path, Path]) -> None:
    base_dir, _ = lora_run
    with pytest.raises(QuantizationUnavailable, match=r"student\.quantization=4bit needs a CUDA GPU"):
        load_student(base_dir, quantization="4bit")


@no_cuda
@pytest.mark.slow
def test_train_job_fails_before_loading_when_quantization_has_no_gpu(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.training import job as train_job
    from tests.test_train_job import _run_job, _setup

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be built or loaded before the quantization check")

    monkeypatch.setattr(train_job, "tiny_base", must_not_load)
    monkeypatch.setattr(train_job, "load_student", must_not_load)
    spec = demo_spec("fast")
    spec.student.lora = LoraSpec(enabled=True)
    spec.student.quantization = "4bit"
    exp_id, _ = _setup(store, spec)
    with pytest.raises(QuantizationUnavailable, match=r"set student\.quantization: none"):
        _run_job(store, spec, exp_id, size=8)


def test_cli_export_writes_the_folder_and_refuses_a_mismatch(
    store: Store, lora_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.__main__ import main

    _, trained = lora_run
    with store.tx() as conn:
        run_id = store.add_run(conn, "exp-x", 64, 0)
    run = store.get_run(run_id)
    assert run is not None
    shutil.copytree(trained, run["run_dir"], dirs_exist_ok=True, ignore=shutil.ignore_patterns("trainer"))
    store.set_run_metrics(run_id, {"field_accuracy": 0.75})

    assert main(["--home", str(store.home), "export", run_id, str(tmp_path / "out")]) == 0
    assert "field_accuracy | 0.75" in (tmp_path / "out" / "README.md").read_text()
    meta = json.loads((Path(run["run_dir"]) / "metadata.json").read_text())
    meta["lora"]["r"] = 2
    write_json(Path(run["run_dir"]) / "metadata.json", meta)
    assert main(["--home", str(store.home), "merge", run_id, str(tmp_path / "out2")]) == 2
    assert "LoRA rank" in capsys.readouterr().err and not (tmp_path / "out2").exists()
