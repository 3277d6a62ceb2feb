"""Typed specs for everything a user configures.

Every spec is a pydantic model with ``extra="forbid"`` so that a misspelt YAML key is an
error naming the field, not a silently ignored setting. The resolved spec is saved next to
the results it produced (job rows, run folders), so a result always says how it was made.

Secrets never live in a spec: a teacher's API key is given by the *name* of an environment
variable (``api_key_env``, one the server declares), which is resolved only at call time, in
the worker process. A key pasted into ``base_url`` anyway is masked whenever the spec is
serialised (stored, shown).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from engine.redaction import redact_url

SPEC_VERSION = 2
"""2: ``student.budget`` (default ``early_stop``), ``ablation.zero_shot`` and three seeds by default.
A version-1 spec keeps the behaviour it was run with (fixed steps, no zero-shot run)."""


Recipe = Literal["gold", "sft", "sft+dpo", "kd", "sft+kd"]
"""How a student learns; see :attr:`StudentSpec.recipe`."""
KD_RECIPES = ("kd", "sft+kd")
"""Recipes with a token-level distillation stage (they need a local teacher)."""

TEMPLATE_FIELDS = ("input",)
"""Placeholders a prompt template may use (what :func:`engine.data.prompts.render_prompt` fills)."""


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable prompt template (a phrase such as ``must contain the
    {input} placeholder``), or None when it is.

    A template is plain text with ``{input}`` placeholders (``{{``/``}}`` for literal braces).
    ``str.format`` would also run a format spec (``{input:>5000000}`` pads every prompt to
    5 MB), a conversion (``{input!r}``) or an attribute or index lookup (``{input.foo}``), each
    of which can grow or crash an import; they are refused here, before any data is read.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:  # a lone "{" or "}"
        return f"is not a valid template: {err} (write literal braces as {{{{ and }}}})"
    names = [name for _, name, _, _ in parts if name is not None]
    known = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name not in TEMPLATE_FIELDS:
            if name.split(".")[0].split("[")[0] in TEMPLATE_FIELDS:
                return f"uses {shown}: attribute and index lookups are not allowed; write {known}"
            return (
                f"uses an unknown placeholder {shown}; only {known} is available "
                "(write literal braces as {{ and }})"
            )
        if spec or conversion:
            return f"uses {shown}: format specs and conversions are not allowed; write {{{name}}}"
    if "input" not in names:
        return "must contain the {input} placeholder"
    return None


class Spec(BaseModel):
    """Base of all specs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskSpec(Spec):
    """What the student must learn: how a prompt is built and what an answer looks like."""

    name: str = Field("task", min_length=1)
    """Human-readable task name."""
    system_prompt: str = ""
    """Optional system message sent to the teacher before each prompt."""
    prompt_template: str = "{input}"
    """Python format string applied to each example's fields; ``{input}`` is the raw input."""
    output_kind: Literal["text", "json", "label"] = "text"
    """Answer type: free text, a JSON object, or one label out of ``labels``."""
    labels: list[str] = Field(default_factory=list)
    """Allowed labels when ``output_kind`` is ``label``."""
    json_fields: list[str] = Field(default_factory=list)
    """Fields expected in a JSON answer (used for field-level accuracy)."""

    @model_validator(mode="after")
    def _labels_for_label_tasks(self) -> TaskSpec:
        if self.output_kind == "label" and not self.labels:
            raise ValueError("labels: a label task needs at least one label")
        blank = [i + 1 for i, label in enumerate(self.labels) if not label.strip()]
        if blank:
            raise ValueError(f"labels: label {', '.join(map(str, blank))} is blank")
        if len({label.strip() for label in self.labels}) != len(self.labels):
            raise ValueError("labels: the same label is listed twice")
        return self

    @field_validator("prompt_template")
    @classmethod
    def _template_is_plain(cls, value: str) -> str:
        problem = template_problem(value)
        if problem:
            raise ValueError(f"prompt_template {problem}")
        return value


class TeacherSpec(Spec):
    """The large model that answers the prompts (any OpenAI-compatible endpoint)."""

    # A refused base_url may hold a key: errors name the field, never echo the value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    kind: Literal["openai", "demo", "local"] = "openai"
    """``openai``: any OpenAI-compatible endpoint at ``base_url``; ``demo``: the built-in
    simulated teacher, started on 127.0.0.1 for the duration of the job; ``local``: a Hugging
    Face causal LM (``model`` = Hub id or local folder) run in the worker with batched
    ``generate`` — for users without an endpoint."""
    base_url: str | None = None
    """Endpoint root, e.g. ``http://localhost:8000/v1`` (vLLM, TGI, Ollama, hosted APIs); http or
    https. Metadata only: answers are keyed on the model, not on where it is served. Credentials
    written into it (``user:key@``, ``?api_key=``) are masked when the spec is saved, so a
    queued job cannot use them: name an environment variable in ``api_key_env`` instead."""
    model: str = "teacher"
    """Model name sent in each request; for a ``local`` teacher, a Hub id or a local folder
    under the model roots (:mod:`engine.training.model_refs`)."""
    name: str | None = Field(None, min_length=1, max_length=200)
    """Optional stable name of the model behind the endpoint. Answers (and the answer cache) are
    keyed on what determines them: this name (default: ``model``), sampling and prompt, never
    on ``base_url``. Set it when the same model is served under another model name elsewhere
    (``vllm`` here, ``ollama`` there) so its answers are reused; give different models
    different names."""
    revision: str | None = None
    """Local teacher only: Hub revision (branch, tag or commit) of a Hub id."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key (never the key itself); one of
    the names the server's admin declared in ``SENSEI_KEY_ENVS`` (:mod:`engine.teacher.keys`),
    checked at launch and again where the worker reads the key."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature."""
    max_tokens: int = Field(256, ge=1, le=32768)
    """Maximum tokens per answer."""
    concurrency: int = Field(16, ge=1, le=1024)
    """Requests in flight at once (for a ``local`` teacher: prompts generated per batch)."""
    requests_per_minute: int | None = Field(None, ge=1)
    """Optional cap on requests sent per minute (every attempt counts, retries included)."""
    tokens_per_minute: int | None = Field(None, ge=1)
    """Optional cap on tokens per minute (prompt + completion), estimated before each request
    from the prompt length and ``max_tokens`` and corrected by the usage the endpoint reports."""
    max_retries: int = Field(5, ge=0, le=20)
    """Retries on 429/5xx/timeouts (exponential backoff with jitter, honours Retry-After)."""
    max_failed_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of the dataset's prompts that may stay unanswered after retries with the job
    still succeeding (with a warning event); above it, the job fails. Default 0: any prompt
    that failed fails the job, so training never silently runs on part of the data. Answers
    are kept either way, so a rerun pays only for the missing prompts."""
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    """Per-request timeout in seconds (finite: a request that never times out hangs its job)."""
    price_input_per_m: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Price in USD per 1M input tokens (for cost accounting)."""
    price_output_per_m: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Price in USD per 1M output tokens."""
    demo_error_rate: float = Field(0.15, ge=0.0, le=1.0)
    """Demo teacher only: fraction of answers that are deliberately wrong."""

    def identity(self) -> str:
        """What identifies this teacher's answers besides sampling and prompt: ``name`` or ``model``."""
        return self.name or self.model

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value.strip())
        except ValueError as err:
            raise ValueError(f"not a valid URL ({err})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The value itself is not echoed unredacted: it may carry a key.
            raise ValueError(f"must be an http:// or https:// URL with a host, got {redact_url(value)!r}")
        return value.strip()

    @field_serializer("base_url")
    def _mask_credentials(self, value: str | None) -> str | None:
        # Whatever serialises a spec (job rows, spec.json, YAML, fingerprints) never sees a key.
        return None if value is None else redact_url(value)

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_env_name(cls, value: str | None) -> str | None:
        # Catch the classic mistake of pasting the key itself into the spec.
        if value is not None and (not value.replace("_", "").isalnum() or value.startswith("sk-")):
            raise ValueError("api_key_env must be the NAME of an environment variable, not a key")
        return value

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> TeacherSpec:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url: an openai-kind teacher needs a base_url")
        return self

    @model_validator(mode="after")
    def _greedy_for_local(self) -> TeacherSpec:
        # The local teacher decodes greedily; a temperature would be silently ignored.
        if self.kind == "local" and self.temperature != 0.0:
            raise ValueError("temperature: a local teacher decodes greedily; set temperature to 0")
        return self


class LoraSpec(Spec):
    """Low-rank adapters (PEFT). Off by default for the tiny from-scratch student."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights."""
    r: int = Field(8, ge=1, le=1024)
    """Adapter rank."""
    alpha: int = Field(16, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names to adapt, or ``all-linear``."""


class TinyModelSpec(Spec):
    """A small Llama built from a config, with a BPE tokenizer trained on the task text."""

    hidden_size: int = Field(128, ge=16, le=4096)
    """Model width."""
    num_layers: int = Field(2, ge=1, le=48)
    """Transformer blocks."""
    num_heads: int = Field(4, ge=1, le=64)
    """Attention heads."""
    vocab_size: int = Field(512, ge=128, le=65536)
    """BPE vocabulary size (trained on the task's own text)."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyModelSpec:
        if self.hidden_size % self.num_heads:
            raise ValueError("num_heads must divide hidden_size")
        return self


class DpoSpec(Spec):
    """A DPO stage after SFT: the student learns to prefer the teacher's accepted answer
    (chosen) over its own failing answer on the same training prompt (rejected)."""

    enabled: bool = False
    """Run DPO after SFT in the same run (pairs are built from the SFT student's answers)."""
    after_sft: bool = True
    """``false``: DPO alone, no SFT stage: pairs come from the student's own answers as loaded
    (for a student that already follows instructions, e.g. an ``-Instruct`` Hub model)."""
    beta: float = Field(0.1, gt=0.0, le=10.0)
    """Strength of the pull towards the SFT (reference) model: lower lets the policy move more."""
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = "sigmoid"
    """DPO loss variant (TRL's ``loss_type``)."""
    max_steps: int = Field(100, ge=1)
    """DPO optimizer steps."""
    learning_rate: float = Field(5e-5, gt=0, le=1.0)
    """DPO peak learning rate (far lower than SFT's: DPO only nudges preferences)."""
    batch_size: int = Field(8, ge=1, le=4096)
    """Pairs per optimizer step."""
    max_pairs: int = Field(1000, ge=1)
    """At most this many training prompts are answered by the SFT student to find failures."""


class KdSpec(Spec):
    """Token-level knowledge distillation (recipes ``kd`` and ``sft+kd``) with TRL's
    ``DistillationTrainer``: the student matches a local teacher's next-token distribution
    (which needs the teacher's tokenizer) on every completion token."""

    lmbda: float = Field(0.5, ge=0.0, le=1.0)
    """On-policy fraction: the share of batches whose completions the student samples itself
    (then scored token by token by the teacher); the rest use the teacher's own answers from
    the teacher job. ``0``: never generates (fastest); ``1``: fully on-policy, as TRL's
    ``DistillationTrainer``."""
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """Divergence: ``0`` forward KL(teacher || student), ``1`` reverse KL(student || teacher),
    in between the generalized Jensen-Shannon divergence with that mixture weight."""
    temperature: float = Field(1.0, gt=0.0, le=10.0)
    """Softens both distributions in the loss, and is the sampling temperature of on-policy batches."""
    max_steps: int | None = Field(None, ge=1)
    """KD optimizer steps; ``None``: the student's budget (``student.budget``), as SFT."""


class StudentSpec(Spec):
    """The small model to train and how it learns (``recipe``)."""

    model: str = "tiny"
    """``tiny`` (built from ``tiny``), a Hub id such as ``Qwen/Qwen2.5-0.5B``, or a local folder
    under the model roots (:mod:`engine.training.model_refs`: the workspace, the data roots,
    ``SENSEI_MODEL_ROOTS``)."""
    recipe: Recipe = "sft"
    """How the student learns. ``gold``: SFT on the dataset's own reference answers (no teacher
    answer is trained on); ``sft``: SFT on the teacher's answers; ``sft+dpo``: then a DPO stage
    (``dpo``; the same as ``dpo.enabled`` with ``sft``); ``kd``: token-level distillation from a
    local teacher that shares the student's tokenizer (``kd``); ``sft+kd``: SFT, then KD from
    the SFT result."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for a Hub id."""
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec)
    """Architecture of the built-in tiny student (used when ``model`` is ``tiny``)."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """LoRA settings."""
    learning_rate: float = Field(1e-3, gt=0, le=1.0)
    """Peak learning rate."""
    batch_size: int = Field(16, ge=1, le=4096)
    """Per-device batch size."""
    budget: Literal["early_stop", "epochs", "steps"] = "early_stop"
    """How long each run trains, so that sizes compare fairly. ``early_stop``: a validation
    slice (``val_fraction`` of the run's own training examples, never the test split) is
    scored every ``eval_steps``; training stops after ``patience`` scores without a better
    validation loss (or at ``max_steps``) and keeps the best checkpoint. ``epochs``: the same
    number of passes (``epochs``) at every size. ``steps``: exactly ``max_steps`` at every size
    (a small set is then seen many more times than a large one)."""
    max_steps: int = Field(600, ge=1)
    """Optimizer steps per run with ``budget: steps``; the most a run may take with ``early_stop``."""
    epochs: float = Field(10.0, gt=0, le=10_000)
    """Passes over the training examples with ``budget: epochs``."""
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    """``early_stop``: share of each run's examples held out to validate on (at least 4, at most 256)."""
    eval_steps: int | None = Field(None, ge=1)
    """``early_stop``: validate every this many steps (default: once an epoch, within 10-50 steps)."""
    patience: int = Field(3, ge=1, le=1000)
    """``early_stop``: validations without a better loss before training stops."""
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    """Fraction of steps spent warming up the learning rate."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule."""
    max_length: int = Field(128, ge=8, le=131072)
    """Maximum tokens of prompt + completion."""
    prompt_format: Literal["auto", "raw", "chat"] = "auto"
    """How the student sees a prompt: ``raw``, the rendered prompt as plain text; ``chat``, the
    task's system prompt and the rendered prompt as chat messages through the tokenizer's chat
    template (an ``-Instruct`` model's own format); ``auto``: chat when the tokenizer has one.
    Training, evaluation, DPO and the Compare page all use the same format."""
    max_new_tokens: int = Field(64, ge=1, le=8192)
    """Tokens generated per test prompt at evaluation."""
    eval_batch_size: int = Field(32, ge=1, le=4096)
    """Prompts generated at once at evaluation."""
    logging_steps: int = Field(5, ge=1)
    """Log loss every this many steps."""
    gpus: int = Field(1, ge=0, le=64)
    """GPUs per run when the machine has GPUs (more than 1 launches through ``accelerate``;
    0 keeps the run on the CPU). Ignored on a CPU-only machine."""
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    """Micro-batches per optimizer step (effective batch = ``batch_size`` x this x GPUs)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    packing: bool = False
    """Pack several examples into each ``max_length`` row (best-fit decreasing; examples
    never attend to each other). Fewer pad tokens, so more useful tokens per second."""
    padding_free: bool = False
    """Flatten each batch into one row of real tokens, no padding (implied by ``packing``);
    each example still attends only to itself and is cut to ``max_length``."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """Load the base model quantized (QLoRA, bitsandbytes); needs ``lora.enabled`` and CUDA."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision; ``auto``: bf16 on GPUs that support it, else fp16 on CUDA, else fp32."""
    save_steps: int | None = Field(100, ge=1)
    """Checkpoint (model, optimizer, scheduler, RNG, data position) every this many steps, so
    ``resume`` continues a failed or cancelled run; ``None``: no periodic checkpoints."""
    save_total_limit: int = Field(2, ge=1)
    """Checkpoints kept on disk (the oldest are deleted); all are removed once the run succeeds."""
    dpo: DpoSpec = Field(default_factory=DpoSpec)
    """Optional DPO stage after SFT."""
    kd: KdSpec = Field(default_factory=KdSpec)
    """Settings of the KD stage (recipes ``kd`` and ``sft+kd``)."""

    @property
    def effective_recipe(self) -> Recipe:
        """``recipe``, with an older spec's ``dpo.enabled`` read as ``sft+dpo``."""
        return "sft+dpo" if self.recipe == "sft" and self.dpo.enabled else self.recipe

    @property
    def uses_dpo(self) -> bool:
        """Whether a DPO stage runs (recipe ``sft+dpo``, or ``dpo.enabled``)."""
        return self.effective_recipe == "sft+dpo"

    @property
    def uses_kd(self) -> bool:
        """Whether a KD stage runs (recipes ``kd`` and ``sft+kd``)."""
        return self.recipe in KD_RECIPES

    @model_validator(mode="after")
    def _dpo_belongs_to_sft(self) -> StudentSpec:
        if self.dpo.enabled and self.recipe not in ("sft", "sft+dpo"):
            raise ValueError(
                f"dpo.enabled: the DPO stage is the sft+dpo recipe; with recipe {self.recipe} "
                "set dpo.enabled: false (or recipe: sft+dpo)"
            )
        return self

    @model_validator(mode="after")
    def _quantization_needs_lora(self) -> StudentSpec:
        if self.quantization != "none" and not self.lora.enabled:
            raise ValueError(
                f"quantization: {self.quantization} trains adapters on frozen quantized weights; "
                "set lora.enabled: true or quantization: none"
            )
        return self


class DataSpec(Spec):
    """Where prompts come from and how the test split is made."""

    source: Literal["demo", "dataset"] = "demo"
    """``demo``: the built-in extraction task generator; ``dataset``: a dataset imported on
    the Data page (or with ``engine.data.importing.import_dataset``), named by ``dataset``."""
    dataset: str | None = None
    """For ``source: dataset``: the dataset's id, or its name (the newest version is used).
    Its frozen test split is kept as it was imported."""
    demo_examples: int = Field(1200, ge=10, le=1_000_000)
    """Demo only: how many examples to generate (train pool + test)."""
    test_size: int = Field(100, ge=1)
    """Demo only: examples held out in the frozen test split (an imported dataset keeps its own)."""
    seed: int = 0
    """Seed for generation and for the train-pool shuffle (sizes are nested subsets of it)."""
    require_valid_output: bool = True
    """Drop teacher answers that do not parse (invalid JSON, unknown label) before training."""

    @model_validator(mode="after")
    def _dataset_named(self) -> DataSpec:
        if self.source == "dataset" and not self.dataset:
            raise ValueError("dataset: source 'dataset' needs the id or name of an imported dataset")
        return self


class CurationSpec(Spec):
    """Which teacher answers are good enough to train on (applied after ``data.require_valid_output``).

    Curation never changes a teacher answer, only whether it is used, so it is not part of
    ``teacher_key``. The defaults keep every valid answer unless an SME rejected it.
    """

    rules: bool = False
    """Apply the workspace's rules (``<home>/rules.yaml``) to every teacher answer: an answer any
    rule rejects is dropped. Also makes a student answer that a rule rejects count as failing
    when DPO pairs are built."""
    judge: str | None = None
    """Name of a judge whose stored verdicts on the teacher answers must be ``accept``."""
    judge_missing: Literal["keep", "drop"] = "drop"
    """What to do with a teacher answer the ``judge`` has no verdict on."""
    sme: bool = True
    """Where SMEs labelled a teacher answer, their consensus overrides rules and judge: accept
    keeps the answer, reject drops it."""


class AblationSpec(Spec):
    """The grid: one run per (train size, seed)."""

    train_sizes: list[int] = Field(default_factory=lambda: [50, 100, 200, 400, 800])
    """Training-set sizes; each is the first n examples of one shuffled pool. A fit is validated
    by predicting the largest size from the others, so it needs at least four sizes."""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    """Training seeds; each size is trained once per seed. Several seeds measure the noise: each
    point of the curve is their mean with an interval."""
    zero_shot: bool = True
    """Also score the untrained student (size 0, seed 0) on the test split: the curve's floor."""
    metric: str | None = None
    """Metric for the curve; default depends on the task (field_accuracy for JSON)."""
    versus_teacher: bool = False
    """After each run, a pairwise judge (the teacher's own model) compares its test answers with
    the teacher's, in both orders: the Ablation page shows each size's score against the
    teacher (0.5 = as good). Costs two judge calls per test example and run."""

    vary: dict[str, list[Any]] = Field(default_factory=dict)
    """One setting to compare, as ``{<spec path>: [values]}``, e.g. ``{"student.recipe": ["gold",
    "sft", "kd"]}``: every (size, seed) cell runs once per value, all on the same test split, and
    the Ablation page draws one curve per value. Settings that change the data or its test
    split (``task.*``, ``data.*``) and the grid itself (``ablation.*``) cannot vary."""

    @field_validator("train_sizes")
    @classmethod
    def _sizes_positive_unique(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("at least one train size is needed")
        if any(n < 1 for n in value):
            raise ValueError("train sizes must be positive")
        if len(set(value)) != len(value):
            raise ValueError("train sizes must be unique")
        return sorted(value)

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("at least one seed is needed")
        if len(set(value)) != len(value):
            raise ValueError("seeds must be unique")
        return value

    @field_validator("vary")
    @classmethod
    def _one_setting(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if len(value) > 1:
            raise ValueError(
                f"vary one setting per experiment (got {', '.join(value)}): with several, a curve "
                "could not say which one made the difference"
            )
        for path, values in value.items():
            if len(values) < 2:
                raise ValueError(f"{path}: give at least two values to compare")
            keys = [variant_key(v) for v in values]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{path}: values must be unique")
        return value


class ExperimentSpec(Spec):
    """A whole data-size ablation: task + data + teacher + student recipe + grid."""

    version: int = SPEC_VERSION
    """Spec format version."""
    name: str = Field("experiment", min_length=1, max_length=200)
    """Experiment name shown in the dashboard."""
    task: TaskSpec = Field(default_factory=TaskSpec)
    """The task."""
    data: DataSpec = Field(default_factory=DataSpec)
    """The data."""
    teacher: TeacherSpec = Field(default_factory=lambda: TeacherSpec(kind="demo"))
    """The teacher."""
    student: StudentSpec = Field(default_factory=StudentSpec)
    """The student recipe."""
    ablation: AblationSpec = Field(default_factory=AblationSpec)
    """The grid."""
    curation: CurationSpec = Field(default_factory=CurationSpec)
    """Which teacher answers are kept for training (rules, judge, SME labels)."""

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        # A stored version-1 spec ran every size for a fixed max_steps and had no zero-shot
        # run; reading it back must not change what it describes.
        if isinstance(data, dict) and data.get("version", SPEC_VERSION) < 2:
            data = {**data, "version": SPEC_VERSION}
            if isinstance(data.get("student"), dict) and "budget" not in data["student"]:
                data["student"] = {**data["student"], "budget": "steps"}
            if isinstance(data.get("ablation"), dict) and "zero_shot" not in data["ablation"]:
                data["ablation"] = {**data["ablation"], "zero_shot": False}
        return data

    @model_validator(mode="after")
    def _sizes_fit_pool(self) -> ExperimentSpec:
        if self.data.source == "demo":
            pool = self.data.demo_examples - self.data.test_size
            if pool < 1:
                raise ValueError("data.test_size must be smaller than data.demo_examples")
            too_big = [n for n in self.ablation.train_sizes if n > pool]
            if too_big:
                raise ValueError(
                    f"ablation.train_sizes: {too_big} exceed the train pool of {pool} examples "
                    "(data.demo_examples - data.test_size)"
                )
        return self

    @model_validator(mode="after")
    def _kd_needs_a_local_teacher(self) -> ExperimentSpec:
        if self.student.uses_kd and self.teacher.kind != "local":
            raise ValueError(
                f"student.recipe: {self.student.recipe} distils the teacher's next-token distributions, "
                f"which an endpoint (teacher.kind: {self.teacher.kind}) does not give; set teacher.kind: "
                "local and teacher.model to a model folder that shares the student's tokenizer"
            )
        return self

    @model_validator(mode="after")
    def _vary_resolves(self) -> ExperimentSpec:
        for path, values in self.ablation.vary.items():
            if problem := vary_path_problem(path):
                raise ValueError(f"ablation.vary: {path} {problem}")
            for value in values:
                try:
                    self.resolve_variant(value)
                except ValidationError as err:
                    lines = format_validation_error(err, "").splitlines()
                    why = "; ".join(line.removeprefix(": ").removeprefix("(top level): ") for line in lines)
                    raise ValueError(f"ablation.vary: {path}={value!r} is refused: {why}") from None
        return self

    def vary_path(self) -> str | None:
        """The spec path ``ablation.vary`` varies, or None."""
        return next(iter(self.ablation.vary), None)

    def resolve_variant(self, value: Any) -> ExperimentSpec:
        """This spec with the varied setting set to ``value`` (and nothing left to vary).

        Raises:
            pydantic.ValidationError: the value makes an invalid spec.
        """
        path = self.vary_path()
        data = self.model_dump(mode="json")
        data["ablation"]["vary"] = {}
        if path is not None:
            *parents, last = path.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[last] = value
        return ExperimentSpec.model_validate(data)

    def variant_specs(self) -> list[tuple[str | None, ExperimentSpec]]:
        """``(variant key, resolved spec)`` per value of ``ablation.vary`` (keys from
        :func:`variant_key`); ``[(None, self)]`` when nothing varies."""
        path = self.vary_path()
        if path is None:
            return [(None, self)]
        return [(variant_key(v), self.resolve_variant(v)) for v in self.ablation.vary[path]]

    def needs_teacher_answers(self) -> bool:
        """Whether any run reads the teacher's answers: every recipe but ``gold`` trains on
        them (KD's teacher-forced batches included), and ``versus_teacher`` judges them."""
        recipes = {r.student.effective_recipe for _, r in self.variant_specs()}
        return self.ablation.versus_teacher or recipes != {"gold"}

    def curve_metric(self) -> str:
        """The metric the marginal-utility curve is drawn with."""
        if self.ablation.metric:
            return self.ablation.metric
        return {"json": "field_accuracy", "label": "exact_match", "text": "fuzzy"}[self.task.output_kind]

    def teacher_key(self) -> str:
        """Identity of the teacher's answers: model (or ``teacher.name``), sampling and prompt.

        Not where the model is served (``base_url`` is metadata: moving the endpoint to another
        host or port keeps every answer) nor the operational knobs (concurrency, retries,
        prices) that do not change an answer. Keys of the earlier form (with ``base_url``) are
        rewritten by the store migration ``0005_teacher_keys_without_url``.
        """
        t = self.teacher
        ident: dict[str, Any] = {
            "kind": t.kind,
            "model": t.identity(),
            "temperature": t.temperature,
            "max_tokens": t.max_tokens,
            "system_prompt": self.task.system_prompt,
            "prompt_template": self.task.prompt_template,
        }
        if t.kind == "demo":
            ident.update(error_rate=t.demo_error_rate, seed=self.data.seed)
        if t.kind == "local":
            ident.update(revision=t.revision)
        return spec_hash(ident)

    def to_yaml(self) -> str:
        """Serialise to YAML (round-trips through :func:`load_spec`)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def fingerprint(self) -> str:
        """Short content hash of the spec; identical specs give identical fingerprints."""
        return spec_hash(self.model_dump(mode="json"))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def spec_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every leaf that differs between two spec dicts, as ``(dotted key, old, new)``, sorted.

    Lists are compared as values; a key present on one side only shows ``None`` on the other.
    """
    a, b = _flatten(old), _flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


VARY_FIXED = ("name", "version", "task.", "data.", "ablation.")
"""Spec paths ``ablation.vary`` refuses: they change the data, its test split, or the grid."""
VARY_ALLOWED = ("data.require_valid_output",)
"""Exceptions to :data:`VARY_FIXED` (they choose among the same answers, on the same test split)."""


def variant_key(value: Any) -> str:
    """The canonical text of a varied value (JSON), as runs store it and curves group by it."""
    return json.dumps(value, sort_keys=True)


def vary_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be varied (a phrase), or None when it can: it must name one setting
    (a leaf of :class:`ExperimentSpec`) that leaves the data and the grid alone."""
    if path not in VARY_ALLOWED and any(path == p or path.startswith(p) for p in VARY_FIXED):
        return (
            "cannot vary: it changes the data, its test split or the grid, and every value must be "
            "scored on the same test split"
        )
    model: type[BaseModel] = ExperimentSpec
    parts = path.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields.get(part)
        if info is None:
            return f"is not a setting of the spec ({part!r} unknown)"
        sub = info.annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            if i == len(parts) - 1:
                return None
            return f"is not a setting of the spec ({'.'.join(parts[: i + 1])} has no sub-settings)"
        model = sub
    example = next(iter(model.model_fields))
    return f"is a section; vary one of its settings (e.g. {path}.{example})"


def spec_hash(obj: Any) -> str:
    """A stable 16-hex-digit hash of any JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class SpecError(ValueError):
    """A spec was refused; the message names every offending field."""


def format_validation_error(err: ValidationError, source: str = "spec") -> str:
    """Turn a pydantic error into lines like ``spec: student.learning_rate: ...``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, source: str = "spec") -> ExperimentSpec:
    """Validate a mapping as an :class:`ExperimentSpec`, raising :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None


def load_spec(text_or_path: str | Path, overrides: list[str] | None = None) -> ExperimentSpec:
    """Load a spec from YAML text or a file, then apply dotted overrides (``a.b=value``).

    Overrides are parsed as YAML scalars, so ``ablation.train_sizes=[10,20]`` gives a list.
    """
    source = "spec"
    looks_like_path = isinstance(text_or_path, str) and "\n" not in text_or_path
    if isinstance(text_or_path, Path) or (looks_like_path and str(text_or_path).endswith((".yaml", ".yml"))):
        path = Path(text_or_path)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise SpecError(f"{source}: cannot read: {err.strerror}") from None
    else:
        text = str(text_or_path)
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(f"{source}:{where}: invalid YAML: {problem}") from None
    data = data if data is not None else {}
    for item in overrides or []:
        apply_override(data, item, source)
    return parse_spec(data, source)


def apply_override(data: dict[str, Any], item: str, source: str = "override") -> None:
    """Set ``data[a][b] = value`` for an override ``a.b=value`` (value parsed as YAML)."""
    if "=" not in item:
        raise SpecError(f"{source}: override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"{source}: override {key}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        node[parts[-1]] = raw


# Nominal prices of a mid-size hosted model, so the demo's cost accounting shows real numbers.
DEMO_TEACHER = TeacherSpec(kind="demo", price_input_per_m=0.60, price_output_per_m=2.40)


def demo_spec(preset: str = "standard") -> ExperimentSpec:
    """The built-in demo ablation: customer messages to JSON, simulated teacher, tiny student.

    Presets: ``standard`` (the dashboard's and ``make demo``'s), ``fast`` (tests).
    """
    from engine.demo.task import DEMO_FIELDS, DEMO_SYSTEM_PROMPT, DEMO_TEMPLATE

    task = TaskSpec(
        name="support-ticket-extraction",
        system_prompt=DEMO_SYSTEM_PROMPT,
        prompt_template=DEMO_TEMPLATE,
        output_kind="json",
        json_fields=list(DEMO_FIELDS),
    )
    if preset == "fast":
        return ExperimentSpec(
            name="demo-fast",
            task=task,
            data=DataSpec(demo_examples=140, test_size=20),
            teacher=DEMO_TEACHER.model_copy(deep=True),
            student=StudentSpec(
                budget="steps",
                max_steps=12,
                batch_size=8,
                learning_rate=3e-3,
                logging_steps=2,
                max_new_tokens=48,
            ),
            ablation=AblationSpec(train_sizes=[16, 64], seeds=[0], zero_shot=False),
        )
    if preset != "standard":
        raise SpecError(f"demo preset: unknown preset {preset!r} (standard, fast)")
    # A copy: pydantic keeps a model instance it is given, so a caller that changed one spec's
    # teacher (spec.teacher.api_key_env = ...) changed every later demo spec's.
    return ExperimentSpec(name="demo", task=task, teacher=DEMO_TEACHER.model_copy(deep=True))
