"""A small local teacher for the offline recipes demo (``python -m engine demo --recipes``).

Token-level distillation needs a teacher whose next-token distributions the student can
read, so the simulated HTTP teacher will not do. This one is a wider, deeper tiny Llama
(:data:`KD_TEACHER`) with a BPE tokenizer trained on the demo task's text, trained once by
SFT on the demo's whole train pool (the reference answers) and cached in the workspace under
``demo/kd_teacher-<hash>``; the students of a recipes experiment are built with its
tokenizer. The recipes experiment has no system prompt, so the teacher job asks the teacher
exactly as the student is prompted (a local teacher without a chat template would otherwise
see the system prompt before the prompt): its answers and the distributions KD reads agree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.specs import (
    AblationSpec,
    ExperimentSpec,
    StudentSpec,
    TeacherSpec,
    TinyModelSpec,
    demo_spec,
    spec_hash,
)
from engine.store import Store

KD_TEACHER = TinyModelSpec(hidden_size=160, num_layers=4, num_heads=5, vocab_size=512)
"""The demo teacher's architecture: wider and deeper than the demo student (128 x 2 layers)."""
KD_TEACHER_STEPS = 300
"""SFT steps (batch 16) the teacher trains, once per demo data spec."""
RECIPES = ["gold", "sft", "sft+dpo", "kd", "sft+kd"]
"""The recipes ``demo --recipes`` compares by default."""


def teacher_rows(spec: ExperimentSpec) -> list[dict[str, str]]:
    """The demo's train pool as SFT rows (the frozen test split stays unseen by the teacher too)."""
    from engine.demo.source import demo_rows

    rows = demo_rows(spec)
    return [{"prompt": ex["prompt"], "completion": ex["reference"]} for ex in rows if ex["split"] == "train"]


def ensure_demo_kd_teacher(
    store: Store,
    spec: ExperimentSpec,
    steps: int = KD_TEACHER_STEPS,
    log: Callable[[str], Any] = print,
) -> Path:
    """The demo KD teacher for ``spec``'s demo data, trained on first use (a few minutes on
    two CPU cores) and reused afterwards.

    Concurrent callers serialise on a file lock; the model is trained in a temporary folder
    and renamed into place, so nobody loads a half-trained teacher.

    Returns:
        ``<workspace>/demo/kd_teacher-<hash>``: a model folder for ``teacher.kind: local``.
    """
    from engine.store.artifacts import file_lock
    from engine.training.sft import train_sft
    from engine.training.student import build_tiny_student, load_student, save_student

    ident = {
        "data": spec.data.model_dump(mode="json"),
        "template": spec.task.prompt_template,
        "system": spec.task.system_prompt,
        "arch": KD_TEACHER.model_dump(),
        "steps": steps,
        "format": 1,
    }
    folder = store.home / "demo"
    final = folder / f"kd_teacher-{spec_hash(ident)}"
    with file_lock(folder / "kd_teacher.lock"):
        if (final / "config.json").exists():
            return final
        import datasets
        import transformers

        datasets.disable_progress_bars()  # the demo's output is for people: no tqdm bars
        transformers.utils.logging.disable_progress_bar()
        rows = teacher_rows(spec)
        log(f"training the demo KD teacher once ({steps} steps on {len(rows)} rows); it is cached in {final}")
        tmp = Path(tempfile.mkdtemp(prefix=".kd_teacher-", dir=folder))
        try:
            texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows]
            build_tiny_student(texts, KD_TEACHER, tmp / "init", seed=spec.data.seed)
            model, tokenizer = load_student(tmp / "init", device="cpu")
            recipe = StudentSpec(
                budget="steps",
                max_steps=steps,
                batch_size=16,
                learning_rate=2e-3,
                max_length=128,
                logging_steps=50,
                save_steps=None,
            )
            result = train_sft(model, tokenizer, rows, recipe, tmp / "trainer", seed=0, report_to=[])
            log(f"demo KD teacher: loss {result.first_loss:.3f} -> {result.final_loss:.3f}")
            save_student(result.model, tokenizer, tmp / "model")
            os.rename(tmp / "model", final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def demo_recipes_spec(
    teacher_dir: Path, preset: str = "fast", recipes: list[str] | None = None
) -> ExperimentSpec:
    """The demo ablation with the local KD teacher, one curve per recipe (one seed, to keep
    sizes x recipes affordable on a CPU).

    Raises:
        engine.specs.SpecError: an unknown recipe (the message names ``ablation.vary``).
    """
    from engine.specs import parse_spec

    base = demo_spec(preset)
    data = base.model_dump(mode="json")
    data["name"] = f"demo-recipes-{preset}"
    data["task"]["system_prompt"] = ""  # the teacher is asked as the student is (module docstring)
    data["teacher"] = TeacherSpec(
        kind="local", model=str(teacher_dir), max_tokens=96, concurrency=32
    ).model_dump(mode="json")
    grid = AblationSpec.model_validate(data["ablation"]).model_dump(mode="json")
    grid.update(seeds=[0], vary={"student.recipe": list(recipes or RECIPES)})
    data["ablation"] = grid
    return parse_spec(data, source="demo --recipes")
