"""Loading a run's model safely, and exporting it as a standalone model folder.

A run folder holds ``model/`` (a LoRA adapter or a full model, plus the tokenizer),
``metadata.json`` and ``spec.json``. An adapter is only meaningful on the exact base it
was trained on, so :func:`load_run_model` first compares the recorded base (content hash,
Hub id, LoRA settings) and the tokenizer with what is on disk now and refuses a mismatch
with a message that lists every difference.

:func:`merge_run` folds an adapter into its base (``merge_and_unload``) and writes a folder
that plain ``AutoModelForCausalLM.from_pretrained`` loads, without PEFT, with the
tokenizer, a copy of ``metadata.json`` and a short ``README.md`` model card. By hand:
``python -m engine export RUN_ID OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from engine.training.metadata import hash_weights, read_metadata
from engine.training.student import is_adapter_dir, load_student


class ArtifactMismatch(RuntimeError):
    """A run's adapter does not fit the base model it would be loaded on."""


def _model_dir(run_dir: Path) -> Path:
    return run_dir / "model" if (run_dir / "model").is_dir() else run_dir


def _recorded_base(adapter_dir: Path) -> str:
    return str(json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"])


def _targets(value: Any) -> set[str] | str:
    return value if isinstance(value, str) else set(value or [])


def _differences(
    meta: dict[str, Any], adapter_cfg: dict[str, Any], base_ref: str, run_tok: PreTrainedTokenizerBase
) -> list[str]:
    """Each way the base at ``base_ref`` and the adapter differ from what was trained."""
    diffs: list[str] = []
    base = meta.get("base_model") or {}
    local = Path(base_ref).is_dir()
    if base.get("kind") == "hub":
        if base.get("id") != base_ref:
            diffs.append(f"base model: trained on Hub model {base.get('id')!r}, given {base_ref!r}")
    elif base.get("kind") == "local":
        if not local:
            diffs.append(f"base model: trained on a local folder {base.get('path')}, given {base_ref!r}")
        elif base.get("content_hash") and hash_weights(Path(base_ref)) != base["content_hash"]:
            diffs.append(
                f"base weights: content hash of {base_ref} is {hash_weights(Path(base_ref))[:12]}…, "
                f"the run was trained on {str(base['content_hash'])[:12]}… (the base changed since)"
            )
    lora = meta.get("lora")
    if lora:
        if int(lora.get("r", -1)) != int(adapter_cfg.get("r", -1)):
            diffs.append(f"LoRA rank: metadata says r={lora.get('r')}, adapter has r={adapter_cfg.get('r')}")
        want, have = _targets(lora.get("target_modules")), _targets(adapter_cfg.get("target_modules"))
        # PEFT saves ``all-linear`` expanded into module names, so only explicit lists compare.
        if want != "all-linear" and want != have:
            diffs.append(f"LoRA target modules: metadata says {sorted(want)}, adapter has {sorted(have)}")
    kwargs: dict[str, Any] = {} if local else {"revision": base.get("revision")}
    try:
        base_tok = AutoTokenizer.from_pretrained(base_ref, **kwargs)
    except (OSError, ValueError) as err:
        diffs.append(f"base tokenizer: cannot load it from {base_ref!r} ({err})")
        return diffs
    if base_tok.get_vocab() != run_tok.get_vocab():
        diffs.append(
            f"tokenizer: the base's vocabulary ({len(base_tok)} tokens) differs from the run's "
            f"({len(run_tok)} tokens)"
        )
    return diffs


def check_compatible(run_dir: str | Path, base_model_ref: str | Path | None = None) -> None:
    """Refuse to put a run's adapter on a base model that is not the one it was trained on.

    Args:
        run_dir: The run folder (with ``model/`` and ``metadata.json``).
        base_model_ref: The base to check (default: the one the adapter records).

    Raises:
        ArtifactMismatch: Listing each difference: base id or path, base weights content
            hash, LoRA rank or target modules, tokenizer vocabulary.
    """
    run_dir = Path(run_dir)
    model_dir = _model_dir(run_dir)
    if not is_adapter_dir(model_dir):
        return  # a full model is standalone: there is no base to disagree with
    adapter_cfg = json.loads((model_dir / "adapter_config.json").read_text())
    base_ref = str(base_model_ref or _recorded_base(model_dir))
    run_tok = AutoTokenizer.from_pretrained(model_dir)
    diffs = _differences(read_metadata(run_dir), adapter_cfg, base_ref, run_tok)
    if diffs:
        raise ArtifactMismatch(f"run {run_dir.name} cannot be loaded on {base_ref}:\n- " + "\n- ".join(diffs))


def load_run_model(
    run_dir: str | Path,
    base_model_ref: str | Path | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a run's model (base + adapter, or the full model) after :func:`check_compatible`.

    Returns:
        ``(model, tokenizer)``; the model is a ``PeftModel`` for an adapter run.
    """
    run_dir = Path(run_dir)
    check_compatible(run_dir, base_model_ref)
    model_dir = _model_dir(run_dir)
    if not is_adapter_dir(model_dir):
        return load_student(model_dir, device=device)
    from peft import PeftModel

    base, _ = load_student(base_model_ref or _recorded_base(model_dir), device=device)
    model = PeftModel.from_pretrained(base, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def merge_run(
    run_dir: str | Path,
    out_dir: str | Path,
    base_model_ref: str | Path | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write a standalone model folder: merged weights, tokenizer, metadata and a model card.

    The folder is built beside ``out_dir`` and renamed into place, so it never exists
    half-written; it has no ``adapter_config.json`` and needs no PEFT to load.

    Args:
        run_dir: The run folder.
        out_dir: Destination; must not exist yet (or be empty).
        base_model_ref: The base for an adapter run (default: the recorded one).
        metrics: The run's evaluation metrics for the model card (e.g. from the store).

    Returns:
        ``out_dir``.

    Raises:
        ArtifactMismatch: The adapter does not fit the base (see :func:`check_compatible`).
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder")
    model, tokenizer = load_run_model(run_dir, base_model_ref, device="cpu")
    merged: PreTrainedModel = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    if read_metadata(run_dir).get("prompt_format") == "chat":
        # An adapter's base brings its own generation config: stop at the template's end of turn.
        from engine.training.formats import set_stop_tokens

        set_stop_tokens(merged, tokenizer, "chat")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name in ("metadata.json", "spec.json"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, tmp / name)
        (tmp / "README.md").write_text(model_card(run_dir, out_dir.name, metrics))
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def prompt_note(meta: dict[str, Any]) -> str:
    """How to prompt the exported model, as it was trained."""
    if meta.get("prompt_format") == "chat":
        system = meta.get("system_prompt") or ""
        with_system = f" after the system message {json.dumps(system)}" if system else ""
        return (
            "Trained on chat messages: send the prompt, rendered with the training template recorded "
            "in `spec.json` (`task.prompt_template`), as the user turn" + with_system + " through the "
            "tokenizer's chat template (`tokenizer.apply_chat_template(..., add_generation_prompt=True)`)."
        )
    return "Prompts must follow the training template recorded in `spec.json` (`task.prompt_template`)."


def model_card(run_dir: Path, name: str, metrics: dict[str, float] | None = None) -> str:
    """A short Markdown model card from the run's metadata, spec and metrics."""
    meta = read_metadata(run_dir)
    spec_path = run_dir / "spec.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
    task = (spec.get("experiment") or {}).get("task") or {}
    base = meta.get("base_model") or {}
    base_name = base.get("id") or base.get("path") or "unknown"
    lines = [
        f"# {name}",
        "",
        "A student model distilled with Sensei (supervised fine-tuning on teacher answers).",
        "",
        f"- Base model: `{base_name}`"
        + (f" (revision {base['revision']})" if base.get("revision") else "")
        + (f", content hash `{str(base['content_hash'])[:16]}`" if base.get("content_hash") else ""),
        f"- Task: {task.get('name', 'unknown')} ({task.get('output_kind', 'text')} output)",
        f"- Training examples: {(meta.get('data') or {}).get('n_train', meta.get('train_size', '?'))}"
        f" (dataset `{(meta.get('data') or {}).get('dataset_hash', '?')}`)",
        f"- Seed: {meta.get('seed', '?')}",
        f"- LoRA: {json.dumps(meta['lora'])} (merged into the weights)"
        if meta.get("lora")
        else "- Full fine-tune",
    ]
    train = meta.get("train") or {}
    shown = {**{k: train[k] for k in ("final_loss", "steps", "tokens_seen") if k in train}, **(metrics or {})}
    if shown:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()
        ]
    libs = meta.get("libraries") or {}
    if libs:
        lines += ["", "## Library versions", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(libs.items())]
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        "```",
        "",
        prompt_note(meta),
        "",
    ]
    return "\n".join(lines)
