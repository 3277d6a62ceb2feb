"""Which models Sensei may load: a Hugging Face Hub id, or a folder under the allowed roots.

A model reference (``student.model``, a ``local`` or KD ``teacher.model``, a small judge's
encoder) is typed on the Launch and Teacher pages and loaded by the server. On a shared server
it must not reach any folder the server can read (``/home/admin/private-model``), nor say
whether one exists. So a reference is one of:

* a **Hub id** (``name`` or ``org/name``, by the Hub's own rules: no leading ``/``, ``.`` or
  ``~``, no ``..``, at most one ``/``), loaded from the Hub (or its cache); or
* a **local folder**: anything else, or a Hub-shaped name that is a folder of the workspace
  (``models/m``) or of the process's working directory (where ``transformers`` would look
  first). A relative folder is relative to the workspace. It must resolve (symlinks
  followed) under a *model root*: the workspace (except ``uploads/``, where anyone signed in
  can write files), the data roots' ``SENSEI_DATA_ROOTS`` (:mod:`engine.data.roots`) and the
  folders in ``SENSEI_MODEL_ROOTS`` (``os.pathsep``-separated, set by whoever starts the
  server; relative entries are relative to the workspace). ``..`` is refused outright, a
  folder may not hold a link to a file outside the roots, and an adapter's base model must
  pass the same rule.

:func:`resolve_model_ref` is the one check. Launch-time checks call it through
:func:`check_spec_models` (every value of ``ablation.vary``), and every worker or server that
loads a model calls it again right before loading and loads what it returns (the resolved
folder), so a crafted job row is refused too. A refusal names the field and says the same
whether or not the folder exists: nothing outside the roots is looked at.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub.utils import HFValidationError, validate_repo_id

from engine.data.roots import data_roots, real_path, workspace_home
from engine.specs import SpecError

if TYPE_CHECKING:
    from engine.specs import ExperimentSpec
    from engine.store import Store

MODEL_ROOTS_VAR = "SENSEI_MODEL_ROOTS"
"""Server environment variable: extra folders models may be loaded from, ``os.pathsep``-separated."""
NOT_MODEL_ROOTS = ("uploads",)
"""Workspace folders that are never model roots: browser users choose the files in them."""


class ModelNotAllowed(SpecError):
    """A model reference that is neither a Hub id nor a folder under the model roots."""


def model_roots(where: Store | Path | str) -> list[Path]:
    """The folders of a workspace (a :class:`~engine.store.Store` or its home) models may be
    loaded from, resolved: the workspace, the data roots, then ``SENSEI_MODEL_ROOTS``."""
    home = workspace_home(where)
    roots = [real_path(home), *data_roots(home)]
    for entry in os.environ.get(MODEL_ROOTS_VAR, "").split(os.pathsep):
        if entry.strip():
            path = Path(entry.strip()).expanduser()
            roots.append(real_path(path if path.is_absolute() else home / path))
    excluded = {real_path(home / name) for name in NOT_MODEL_ROOTS}
    return [r for r in dict.fromkeys(roots) if r not in excluded]


def _allowed(real: Path, where: Store | Path | str) -> bool:
    home = workspace_home(where)
    if any(real.is_relative_to(real_path(home / name)) for name in NOT_MODEL_ROOTS):
        return False
    return any(real.is_relative_to(root) for root in model_roots(where))


def is_hub_id(ref: str) -> bool:
    """Whether ``ref`` is shaped like a Hugging Face Hub id (``name`` or ``org/name``)."""
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def refusal(field: str, ref: str, where: Store | Path | str) -> str:
    """The message for a refused reference: the same whether or not such a folder exists."""
    roots = ", ".join(str(r) for r in model_roots(where))
    return (
        f"{field}: {ref!r} cannot be loaded: only Hugging Face Hub ids (name or org/name) and model "
        f"folders under the workspace and the model roots ({roots}) can; ask an admin to add its "
        f"folder to {MODEL_ROOTS_VAR}"
    )


def resolve_model_ref(where: Store | Path | str, ref: str | Path, field: str) -> str:
    """What to load for model reference ``ref``: the Hub id itself, or the real folder.

    Args:
        where: The workspace (a :class:`~engine.store.Store` or its home).
        ref: The reference as the spec has it.
        field: The spec field it came from (``student.model``), named in a refusal.

    Returns:
        A Hub id unchanged, or the absolute, resolved path of a local folder (which need not
        exist; loading it then says so). Load this, not ``ref``: ``transformers`` resolves a
        relative path against the process's working directory, not the workspace.

    Raises:
        ModelNotAllowed: a local folder outside the model roots (or using ``..``, or holding a
            link that leads out of them, or an adapter whose base model is refused); the
            message is :func:`refusal`'s, whether or not the folder exists.
    """
    return _resolve(where, str(ref).strip(), field, adapters=1)


def _resolve(where: Store | Path | str, text: str, field: str, adapters: int) -> str:
    refused = ModelNotAllowed(refusal(field, text, where))
    if not text or "\0" in text:
        raise refused
    home = workspace_home(where)
    if is_hub_id(text):
        # A Hub-shaped name can also be a folder: the workspace's, or the working directory's,
        # where transformers would load it from instead of the Hub. A link counts even when
        # its target is missing, so what it points to is never told by how it is refused.
        folder = next((base / text for base in (home, Path.cwd()) if _entry(base / text)), None)
        if folder is None:
            return text
        path = folder
    else:
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # ~user of an unknown user
            raise refused from None
        if ".." in path.parts:  # even one that stays inside: resolving it would probe outside
            raise refused
        if not path.is_absolute():
            path = home / path
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise refused from None
    if not _allowed(real, where) or (real.is_dir() and _links_out(real, where)):
        raise refused
    base = _adapter_base(real)
    if base is not None:  # loaded with the adapter: the same rule, one level deep
        base_field = f"{field} (the base model of its adapter)"
        # A relative base would be found from the loading process's working directory.
        if adapters < 1 or not (is_hub_id(base) or Path(base).is_absolute()):
            raise ModelNotAllowed(refusal(base_field, base, where))
        _resolve(where, base, base_field, adapters - 1)
    return str(real)


def _entry(path: Path) -> bool:
    return path.is_dir() or path.is_symlink()


def _links_out(folder: Path, where: Store | Path | str) -> bool:
    """Whether an entry of ``folder`` (what ``from_pretrained`` opens) links outside the roots."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    return any(e.is_symlink() and not _allowed(real_path(e), where) for e in entries)


def _adapter_base(folder: Path) -> str | None:
    """The base model a PEFT adapter folder names (loaded with it), or None."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return str(base) if base else None


def check_spec_models(where: Store | Path | str, spec: ExperimentSpec) -> None:
    """Refuse an experiment whose student or local teacher (in any value of ``ablation.vary``)
    names a model folder outside the model roots.

    Raises:
        ModelNotAllowed: naming ``student.model`` or ``teacher.model``.
    """
    for _, cell in spec.variant_specs():
        if cell.student.model != "tiny":
            resolve_model_ref(where, cell.student.model, "student.model")
        if cell.teacher.kind == "local":
            resolve_model_ref(where, cell.teacher.model, "teacher.model")
