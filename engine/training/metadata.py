"""What a run folder records about how its model was made: ``spec.json`` and ``metadata.json``.

``metadata.json`` answers "could I reproduce this?" without the database: which base model
(Hub id + revision, or a content hash of a local folder's weights), which LoRA settings,
exactly which training examples (dataset hash + hash of the chosen indices), the seed, and
the library versions. Files are written atomically so a crash never leaves half a JSON.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

METADATA_VERSION = 1
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "tokenizers", "accelerate")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON via a temp file and rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape training results, plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def hash_weights(folder: Path) -> str:
    """SHA-256 over a model folder's weight files and config (names and bytes, sorted).

    Tokenizer files are included too: the same weights with another tokenizer are another model.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in ("config.json", "tokenizer.json"))
    )
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def hash_indices(indices: Iterable[int]) -> str:
    """Short hash of the ordered training example indices (the exact subset and its order)."""
    blob = ",".join(str(int(i)) for i in indices).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def base_model_record(model_ref: str | Path, revision: str | None) -> dict[str, Any]:
    """Identify a base model: a local folder by content hash, a Hub id by id + revision."""
    path = Path(model_ref)
    if path.is_dir():
        return {
            "kind": "local",
            "path": str(path.resolve()),
            "revision": None,
            "content_hash": hash_weights(path),
        }
    return {"kind": "hub", "id": str(model_ref), "revision": revision or "main", "content_hash": None}


def read_metadata(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``metadata.json`` (``{}`` when it has none, e.g. an older run)."""
    path = Path(run_dir) / "metadata.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def build_metadata(
    *,
    base: dict[str, Any],
    lora: dict[str, Any] | None,
    dataset_id: str,
    dataset_hash: str,
    teacher_key: str | None,
    train_indices: list[int],
    train_size: int,
    seed: int,
    train: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``metadata.json`` record of a run.

    Args:
        base: From :func:`base_model_record` (tiny bases add their architecture).
        lora: The LoRA settings, or ``None`` for a full fine-tune.
        dataset_id: The store's dataset id.
        dataset_hash: The dataset's content hash.
        teacher_key: Identity of the teacher answers trained on (``ExperimentSpec.teacher_key``).
        train_indices: Example indices trained on, in training order.
        train_size: Requested training-set size (may exceed ``len(train_indices)``).
        seed: Training seed.
        train: Training outcome (losses, steps, tokens, wall time, ...).
        extra: Anything else worth keeping (merged last).

    Returns:
        A JSON-serialisable dict.
    """
    record: dict[str, Any] = {
        "format_version": METADATA_VERSION,
        "base_model": base,
        "lora": lora,
        "data": {
            "dataset_id": dataset_id,
            "dataset_hash": dataset_hash,
            "teacher_key": teacher_key,
            "train_indices_hash": hash_indices(train_indices),
            "n_train": len(train_indices),
        },
        "train_size": train_size,
        "seed": seed,
        "train": train,
        "libraries": library_versions(),
    }
    record.update(extra or {})
    return record
