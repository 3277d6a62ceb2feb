"""The Launch page's form, described as data: groups of fields, each a dotted spec path.

The page draws one widget per :class:`FormField` (its kind picks the widget) in one tab per
group; :func:`form_defaults` turns a spec into widget values and :func:`spec_from_form` turns
them back into a validated spec. Fields are listed only when the spec has them, so the form
follows :mod:`engine.specs` as it grows instead of breaking.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from engine.specs import ExperimentSpec, SpecError, demo_spec, parse_spec

LIST_FIELDS = ("ablation.train_sizes", "ablation.seeds")
"""Edited as ``"1, 2, 3"`` text."""
OPTIONAL_FIELDS = (
    "teacher.name",
    "teacher.base_url",
    "teacher.api_key_env",
    "student.revision",
    "teacher.revision",
    "data.dataset",
    "curation.judge",
    "ablation.metric",
)
"""Optional strings: ``""`` means None."""
KEY_FIELDS = ("teacher.api_key_env",)
"""Key variable names: picked from the names the server declares
(:func:`engine.teacher.keys.key_choices`), never typed; ``""`` means no key."""
OPTIONAL_INT_FIELDS = (
    "teacher.requests_per_minute",
    "teacher.tokens_per_minute",
    "student.save_steps",
    "student.eval_steps",
    "student.kd.max_steps",
)
"""Optional whole numbers, edited as text: ``""`` means None (no limit, no checkpoints)."""
MODULES_FIELD = "student.lora.target_modules"
"""Edited as ``"q_proj, v_proj"`` or ``"all-linear"``."""
VARY_FIELD = "ablation.vary"
"""Edited as ``"student.recipe: gold, sft, kd"`` (values parsed as YAML scalars); ``""``: nothing varies."""


@dataclass(frozen=True)
class FormField:
    """One widget of the form.

    Attributes:
        key: Dotted spec path (also the widget key, prefixed with ``f.``).
        label: Widget label.
        kind: ``text``, ``int``, ``float``, ``bool`` or ``select`` (chosen from the spec's type),
            or ``key``: a declared API key name (options from :func:`engine.teacher.keys.key_choices`).
        options: Choices of a ``select`` (the spec's ``Literal`` values).
        help: Tooltip.
    """

    key: str
    label: str
    kind: str
    options: tuple[str, ...] = field(default_factory=tuple)
    help: str | None = None


# (dotted key, label, help) per group; fields the spec lacks are left out at import time.
_GROUPS: dict[str, list[tuple[str, str, str | None]]] = {
    "Basics": [
        ("name", "Name", None),
        ("ablation.train_sizes", "Train sizes", "Comma-separated; each is the first n examples of one pool."),
        ("ablation.seeds", "Seeds", "Each size is trained once per seed; several seeds give error bars."),
        ("ablation.metric", "Curve metric", "Empty: the task's default (field_accuracy for JSON)."),
        ("ablation.zero_shot", "Score the untrained student", "Size 0: the curve's floor."),
        (
            VARY_FIELD,
            "Vary",
            "One setting and its values, e.g. `student.recipe: gold, sft, kd`: every cell runs once "
            "per value, one curve each. Empty: nothing varies.",
        ),
        (
            "ablation.versus_teacher",
            "Judge runs vs teacher",
            "Pairwise, both orders: 2 judge calls per test item.",
        ),
        ("data.source", "Data", "demo: the generated ticket task; dataset: one imported on the Data page."),
        ("data.dataset", "Dataset", "Name or id of an imported dataset (for Data = dataset)."),
        ("data.demo_examples", "Demo examples", "Generated examples (train pool + test)."),
        ("data.test_size", "Test size", "Held-out examples every run is scored on."),
        ("data.seed", "Data seed", None),
        (
            "student.recipe",
            "Recipe",
            "gold: reference answers; sft: teacher answers; sft+dpo: then DPO; kd: token-level "
            "distillation from a local teacher; sft+kd: SFT, then KD.",
        ),
        (
            "student.model",
            "Student model",
            "`tiny` (built offline), a Hub id such as Qwen/Qwen2.5-0.5B, or a folder under the "
            "workspace or a model root (SENSEI_MODEL_ROOTS).",
        ),
        ("student.revision", "Student revision", "Hub branch, tag or commit (Hub ids only)."),
        (
            "student.prompt_format",
            "Prompt format",
            "chat: via the tokenizer's chat template; auto: if it has one.",
        ),
    ],
    "Teacher": [
        ("teacher.kind", "Kind", "demo: simulated; openai: any OpenAI-compatible endpoint; local: HF model."),
        ("teacher.base_url", "Base URL", "e.g. http://localhost:8000/v1"),
        (
            "teacher.model",
            "Model",
            "Name sent to the endpoint; for kind local, a Hub id or a folder under the workspace or a "
            "model root (SENSEI_MODEL_ROOTS).",
        ),
        ("teacher.revision", "Revision", "Local teacher only: Hub branch, tag or commit."),
        (
            "teacher.api_key_env",
            "API key variable",
            "One of the key names the server's admin declared in SENSEI_KEY_ENVS — never the key.",
        ),
        ("teacher.concurrency", "Concurrency", "Requests in flight (local: prompts per batch)."),
        ("teacher.requests_per_minute", "Requests / minute", "Empty: no limit. Retries count too."),
        ("teacher.tokens_per_minute", "Tokens / minute", "Empty: no limit."),
        ("teacher.max_retries", "Max retries", "On 429, 5xx and timeouts, with backoff."),
        ("teacher.timeout_s", "Timeout (s)", "Per request."),
        ("teacher.max_tokens", "Max tokens", None),
        ("teacher.temperature", "Temperature", None),
        ("teacher.demo_error_rate", "Demo error rate", "Demo teacher only."),
        ("teacher.price_input_per_m", "$ / 1M input tokens", None),
        ("teacher.price_output_per_m", "$ / 1M output tokens", None),
        ("teacher.name", "Teacher name", "Same model on another host: same name, answers reused."),
        (
            "teacher.max_failed_fraction",
            "Failures allowed",
            "Share of prompts that may fail (then a warning).",
        ),
    ],
    "Curation": [
        ("data.require_valid_output", "Drop unparsable answers", "Invalid JSON or unknown label."),
        ("curation.rules", "Apply workspace rules", "Answers any rule rejects are not trained on."),
        ("curation.judge", "Judge", "Name of a judge whose verdicts must be accept; empty: none."),
        ("curation.judge_missing", "No verdict", "Keep or drop answers the judge has not seen."),
        ("curation.sme", "SME labels override", "Where experts labelled an answer, their consensus wins."),
    ],
    "LoRA": [
        ("student.lora.enabled", "Train LoRA adapters", "Off: all weights are trained."),
        ("student.lora.r", "Rank r", None),
        ("student.lora.alpha", "Alpha", "Scale = alpha / r."),
        ("student.lora.dropout", "Dropout", None),
        (MODULES_FIELD, "Target modules", "Comma-separated module names, or all-linear."),
    ],
    "Optimisation": [
        ("student.learning_rate", "Learning rate", None),
        ("student.batch_size", "Batch size", "Per device."),
        ("student.gradient_accumulation_steps", "Gradient accumulation", "Effective batch = batch x this."),
        ("student.budget", "Training budget", "early_stop: validate, keep the best; epochs/steps: fixed."),
        ("student.max_steps", "Max steps", "budget steps: every run; early_stop: the most a run may take."),
        ("student.epochs", "Epochs", "budget epochs: passes over each run's examples."),
        ("student.val_fraction", "Validation share", "early_stop: share of each run's examples held out."),
        ("student.eval_steps", "Validate every", "early_stop: steps between validations; empty: each epoch."),
        ("student.patience", "Patience", "early_stop: validations without improvement before stopping."),
        ("student.warmup_ratio", "Warmup ratio", None),
        ("student.lr_scheduler", "LR schedule", None),
        ("student.precision", "Precision", None),
        ("student.quantization", "Quantization", "4bit/8bit: QLoRA (needs LoRA and a CUDA GPU)."),
        ("student.gradient_checkpointing", "Gradient checkpointing", "Less memory, about 30% slower."),
        ("student.packing", "Packing", "Several examples per max_length row."),
        ("student.padding_free", "Padding-free", "Batches as one row of real tokens."),
    ],
    "DPO": [
        ("student.dpo.enabled", "DPO stage", "Prefer accepted teacher answers to the student's bad ones."),
        ("student.dpo.after_sft", "After SFT", "Off: DPO alone, on an already instruction-tuned student."),
        ("student.dpo.beta", "Beta", "Lower lets the policy move further from the reference."),
        ("student.dpo.loss_type", "Loss", None),
        ("student.dpo.max_steps", "DPO steps", None),
        ("student.dpo.learning_rate", "DPO learning rate", None),
        ("student.dpo.batch_size", "DPO batch size", "Pairs per step."),
        ("student.dpo.max_pairs", "Max prompts", "Training prompts the student answers to find failures."),
    ],
    "KD": [
        ("student.kd.lmbda", "On-policy fraction (lmbda)", "Share of batches the student samples itself."),
        ("student.kd.beta", "Beta", "0: forward KL, 1: reverse KL, between: generalized JSD."),
        ("student.kd.temperature", "Temperature", "Softens both distributions; samples on-policy batches."),
        ("student.kd.max_steps", "KD steps", "Empty: the student's budget, as SFT."),
    ],
    "Advanced": [
        ("student.max_length", "Max length (tokens)", "Prompt + completion."),
        ("student.max_new_tokens", "Max new tokens", "Per test answer at evaluation."),
        ("student.eval_batch_size", "Eval batch size", None),
        ("student.logging_steps", "Logging steps", None),
        ("student.gpus", "GPUs per run", "0 keeps runs on the CPU."),
        ("student.save_steps", "Checkpoint every", "Steps between checkpoints (for resume); empty: none."),
        ("student.save_total_limit", "Checkpoints kept", None),
        ("student.tiny.hidden_size", "Tiny: hidden size", "Only for the `tiny` student."),
        ("student.tiny.num_layers", "Tiny: layers", None),
        ("student.tiny.num_heads", "Tiny: heads", None),
        ("student.tiny.vocab_size", "Tiny: vocabulary", None),
    ],
}


def _annotation(dotted: str) -> Any | None:
    """The spec's type annotation at ``dotted`` (None when the spec has no such field)."""
    model: type[BaseModel] = ExperimentSpec
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return None
        if i == len(parts) - 1:
            return info.annotation
        sub = info.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return None


def _field(key: str, label: str, help_text: str | None) -> FormField | None:
    ann = _annotation(key)
    if ann is None:
        return None
    if key in KEY_FIELDS:
        return FormField(key, label, "key", help=help_text)
    if key in (*LIST_FIELDS, *OPTIONAL_FIELDS, *OPTIONAL_INT_FIELDS, MODULES_FIELD, VARY_FIELD):
        return FormField(key, label, "text", help=help_text)
    if typing.get_origin(ann) is typing.Literal:
        return FormField(key, label, "select", tuple(str(a) for a in typing.get_args(ann)), help_text)
    kind = {bool: "bool", int: "int", float: "float"}.get(ann, "text")
    return FormField(key, label, kind, help=help_text)


FORM_GROUPS: dict[str, list[FormField]] = {
    group: [f for f in (_field(*row) for row in rows) if f is not None] for group, rows in _GROUPS.items()
}
"""Group name -> the fields of that tab, in order."""
FORM_FIELDS: tuple[str, ...] = tuple(f.key for fields in FORM_GROUPS.values() for f in fields)
"""Every dotted key the form edits."""


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node[part]
    return node


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def form_defaults(spec: ExperimentSpec | None = None) -> dict[str, Any]:
    """The form's values (dotted key -> widget value) for ``spec`` (the standard demo if None)."""
    data = (spec or demo_spec("standard")).model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in FORM_FIELDS:
        value = _get(data, key)
        if key in LIST_FIELDS or (key == MODULES_FIELD and isinstance(value, list)):
            value = ", ".join(str(v) for v in value)
        elif key in OPTIONAL_FIELDS or key in OPTIONAL_INT_FIELDS:
            value = "" if value is None else str(value)
        elif key == VARY_FIELD:
            value = format_vary(value)
        out[key] = value
    return out


def parse_int_list(text: str, field_name: str) -> list[int]:
    """``"50, 200 800"`` -> ``[50, 200, 800]``; a SpecError naming ``field_name`` otherwise."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise SpecError(
            f"form: {field_name}: expected whole numbers separated by commas, got {text!r}"
        ) from None


def parse_optional_int(text: str, field_name: str) -> int | None:
    """``""`` -> None, ``"1,000"`` -> 1000; a SpecError naming ``field_name`` otherwise."""
    cleaned = text.strip().replace("_", "")
    if re.fullmatch(r"\d{1,3}(,\d{3})+", cleaned):  # thousands separators, not "1,2"
        cleaned = cleaned.replace(",", "")
    if not cleaned:
        return None
    try:
        return int(cleaned)
    except ValueError:
        raise SpecError(f"form: {field_name}: expected a whole number or nothing, got {text!r}") from None


def format_vary(vary: Mapping[str, list[Any]]) -> str:
    """``{"student.recipe": ["gold", "kd"]}`` -> ``"student.recipe: gold, kd"`` (``""`` for none)."""
    return "; ".join(f"{path}: " + ", ".join(_scalar(v) for v in values) for path, values in vary.items())


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_vary(text: str) -> dict[str, list[Any]]:
    """``"student.recipe: gold, kd"`` -> ``{"student.recipe": ["gold", "kd"]}``; each value is
    read as a YAML scalar (``0.003`` a number, ``true`` a bool). ``""`` -> ``{}``; a SpecError
    naming ``ablation.vary`` otherwise."""
    out: dict[str, list[Any]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        path, sep, values = part.partition(":")
        if not sep or not path.strip() or not values.strip():
            raise SpecError(f"form: {VARY_FIELD}: expected 'setting: value, value', got {part!r}")
        try:
            out[path.strip()] = [yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
        except yaml.YAMLError:
            where = f"form: {VARY_FIELD}: {path.strip()}"
            raise SpecError(f"{where}: cannot read the values {values.strip()!r}") from None
    return out


def spec_from_form(values: Mapping[str, Any], base: ExperimentSpec | None = None) -> ExperimentSpec:
    """Build and validate a spec from form values (dotted key -> widget value).

    Fields the form does not show (the task, ...) come from ``base`` (the standard demo spec
    by default). Raises SpecError naming every refused field.
    """
    data = (base or demo_spec("standard")).model_dump(mode="json")
    for key, raw in values.items():
        value = raw
        if key in LIST_FIELDS:
            value = parse_int_list(str(raw), key)
        elif key in OPTIONAL_FIELDS:
            value = str(raw).strip() or None
        elif key in OPTIONAL_INT_FIELDS:
            value = parse_optional_int(str(raw), key)
        elif key == VARY_FIELD:
            value = parse_vary(str(raw))
        elif key == MODULES_FIELD:
            text = str(raw).strip()
            value = text if text == "all-linear" else [m for m in text.replace(",", " ").split() if m]
        elif isinstance(raw, str):
            value = raw.strip()
        _set(data, key, value)
    return parse_spec(data, source="form")
