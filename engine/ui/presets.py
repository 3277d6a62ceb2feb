"""Starting points for the Launch form, and what changed since the previous experiment.

A preset is a whole, valid :class:`ExperimentSpec`; the form starts from it and the user
changes a few fields. :func:`spec_diff` lists those changes against the newest experiment so
the page can say "changes 2 parameters: student.learning_rate, student.lora.r" — changing one
thing at a time is what makes an ablation readable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from engine.specs import ExperimentSpec, StudentSpec, demo_spec, spec_diff
from engine.store import Store

IGNORED_IN_DIFF = ("name", "version")
"""Keys that differ between any two experiments without changing what is trained."""


def tiny_cpu() -> ExperimentSpec:
    """The demo: tiny from-scratch student, simulated teacher; trains on 2 CPU cores."""
    return demo_spec("standard")


def gpu_7b() -> ExperimentSpec:
    """A 7-8B instruct student with QLoRA on one 24 GB GPU (e.g. an RTX 4090 or A10).

    4-bit base weights (~5 GB for 7B) + r=16 adapters on every linear layer + gradient
    checkpointing keep batch 4 x 1024 tokens well inside 24 GB; gradient accumulation 4 gives
    an effective batch of 16. 2e-4 is the usual QLoRA learning rate.
    """
    wanted: dict[str, Any] = {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "learning_rate": 2e-4,
        "batch_size": 4,
        "gradient_accumulation_steps": 4,
        "max_steps": 300,
        "warmup_ratio": 0.03,
        "lr_scheduler": "cosine",
        "max_length": 1024,
        "max_new_tokens": 128,
        "eval_batch_size": 16,
        "logging_steps": 10,
        "gpus": 1,
        "quantization": "4bit",
        "precision": "bf16",
        "gradient_checkpointing": True,
    }
    # Only fields this version of the spec knows (older specs lack the memory knobs).
    student = StudentSpec.model_validate({k: v for k, v in wanted.items() if k in StudentSpec.model_fields})
    return demo_spec("standard").model_copy(update={"name": "qwen7b-qlora", "student": student})


PRESETS: dict[str, Callable[[], ExperimentSpec]] = {
    "Tiny student on CPU (demo)": tiny_cpu,
    "7-8B student on one 24 GB GPU": gpu_7b,
}
"""Preset label -> spec factory (the first is the default)."""


def preset(label: str) -> ExperimentSpec:
    """The preset called ``label`` (re-validated, so a preset can never be an invalid spec)."""
    return ExperimentSpec.model_validate(PRESETS[label]().model_dump())


def diff_sentence(old: Mapping[str, Any] | None, new: Mapping[str, Any], old_name: str = "") -> str:
    """``changes 2 parameters: student.learning_rate, student.lora.r`` (name and version ignored)."""
    if old is None:
        return "first experiment of this workspace: nothing to compare with"
    changed = [k for k, _, _ in spec_diff(old, new) if k not in IGNORED_IN_DIFF]
    against = f" vs {old_name}" if old_name else ""
    if not changed:
        return f"same parameters{against}"
    noun = "parameter" if len(changed) == 1 else "parameters"
    return f"changes {len(changed)} {noun}{against}: {', '.join(changed)}"


def diff_vs_newest(store: Store, spec: ExperimentSpec) -> str:
    """:func:`diff_sentence` of ``spec`` against the newest experiment in ``store``."""
    newest = next(iter(store.list_experiments()), None)
    if newest is None:
        return diff_sentence(None, spec.model_dump(mode="json"))
    return diff_sentence(newest["spec"], spec.model_dump(mode="json"), newest["name"])
