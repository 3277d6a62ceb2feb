"""Which server files an import may read: only files under declared data roots.

A path typed on the Data page is read by the dashboard (preview, validation) and by the
import worker. On a shared server it must not reach any file the server can read
(``~/.ssh/id_rsa``, another team's data), so it is resolved and checked against an
allowlist of folders, the *data roots*:

* ``<workspace>/uploads`` (where the page saves uploaded files) and ``<workspace>/data``
  (where an admin may drop files for everyone), always;
* the folders listed in ``SENSEI_DATA_ROOTS`` (``os.pathsep``-separated, set by whoever
  starts the server; a relative entry is relative to the workspace).

:func:`resolve_data_path` is the one check, used by the page's preview and validation
(:mod:`engine.ui.data`), by :func:`engine.data.import_job.queue_import` and again by the import
worker, so a crafted job row is refused too. A path is resolved (symlinks followed) before
it is checked, and ``..`` is refused outright, so neither can leave a root; a saved-dataset
folder may not hold a link that leads out of the roots either. A refusal says the same
whether or not the path exists: it never looks outside the roots.

:func:`import_source` adds what the import itself needs: the file exists, and it is not
larger than :data:`MAX_IMPORT_MB` (the import holds every row in memory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from engine.specs import SpecError

if TYPE_CHECKING:
    from engine.store import Store

DATA_ROOTS_VAR = "SENSEI_DATA_ROOTS"
"""Server environment variable: extra folders imports may read, ``os.pathsep``-separated."""
WORKSPACE_ROOTS = ("uploads", "data")
"""Folders of the workspace that are always data roots."""
MAX_IMPORT_MB = 100
"""The largest file (or saved-dataset folder) an import reads, in MB (2**20 bytes).

The import holds every row in memory while it validates, cleans, finds near-duplicates
(MinHash signatures, LSH buckets) and splits (all or nothing). Measured with
``bench/import_scale.py``'s rows (JSON Lines, ~330 bytes a row): peak memory grew by about
36 MB per MB of file (~11 KB a row), so 100 MB (~320,000 such rows) needs about 3.6 GB in the
worker, and its preview and validation as much in the dashboard — a share a 24 GB, 2-core
server can give while training runs (and about 3 minutes of import there). Longer rows cost
less per MB. ``.streamlit/config.toml``'s ``server.maxUploadSize`` is the same number (a
test keeps them equal)."""


class PathNotAllowed(SpecError):
    """A path outside the data roots (or one that uses ``..``); the message names the roots."""


def workspace_home(where: Store | Path | str) -> Path:
    """The workspace folder of a :class:`~engine.store.Store`, or the folder itself."""
    return Path(where) if isinstance(where, str | Path) else where.home


def real_path(path: Path) -> Path:
    """``path`` with symlinks resolved (as written, made absolute, when a symlink loops)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the path as written
        return Path(os.path.abspath(path))


def data_roots(where: Store | Path | str) -> list[Path]:
    """The data roots of a workspace (a :class:`~engine.store.Store` or its home), resolved:
    ``uploads/``, ``data/``, then ``SENSEI_DATA_ROOTS`` in order. They need not exist."""
    home = workspace_home(where)
    roots = [home / name for name in WORKSPACE_ROOTS]
    for entry in os.environ.get(DATA_ROOTS_VAR, "").split(os.pathsep):
        if entry.strip():
            path = Path(entry.strip()).expanduser()
            roots.append(path if path.is_absolute() else home / path)
    return list(dict.fromkeys(real_path(r) for r in roots))


def roots_text(where: Store | Path | str) -> str:
    """The roots as a page shows them: ``/ws/uploads, /ws/data``."""
    return ", ".join(str(r) for r in data_roots(where))


def refusal(user_path: str | Path, where: Store | Path | str) -> str:
    """The message for a path outside the roots: the same for an existing and a missing one."""
    return (
        f"{user_path}: only files under the data roots can be read ({roots_text(where)}); "
        f"upload the file instead, or ask an admin to add its folder to {DATA_ROOTS_VAR}"
    )


def resolve_data_path(where: Store | Path | str, user_path: str | Path) -> Path:
    """The real path of ``user_path`` if it lies under a data root of the workspace.

    A relative path is relative to the workspace (``uploads/…``, ``data/…``); ``~`` is
    expanded. The path need not exist (callers say "no such file" for one inside a root).

    Raises:
        PathNotAllowed: the path is empty, uses ``..``, resolves outside every root (a
            symlink counts by its target), or is a folder holding a link that leads out of the
            roots. The message is :func:`refusal`'s, whether or not the path exists.
    """
    text = str(user_path).strip()
    not_allowed = PathNotAllowed(refusal(text, where))
    if not text or "\0" in text:
        raise not_allowed
    path = Path(text).expanduser()
    if ".." in path.parts:  # even one that stays inside: resolving it would probe outside
        raise not_allowed
    if not path.is_absolute():
        path = workspace_home(where) / path
    roots = data_roots(where)
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise not_allowed from None
    if not any(real.is_relative_to(root) for root in roots):
        raise not_allowed
    if real.is_dir() and _links_out(real, roots):
        raise not_allowed
    return real


def _links_out(folder: Path, roots: list[Path]) -> bool:
    """Whether anything under ``folder`` is a symlink whose target is outside every root."""
    for parent, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            entry = Path(parent) / name
            if entry.is_symlink() and not any(real_path(entry).is_relative_to(r) for r in roots):
                return True
    return False


def source_bytes(path: Path) -> int:
    """Size of a file, or of every file under a folder (links are not followed)."""
    if not path.is_dir():
        return path.stat().st_size
    return sum((Path(parent) / name).lstat().st_size for parent, _, files in os.walk(path) for name in files)


def import_source(where: Store | Path | str, user_path: str | Path) -> Path:
    """The real path of a file or saved-dataset folder an import may read.

    Raises:
        PathNotAllowed: outside the data roots (see :func:`resolve_data_path`).
        ValueError: no such file or folder (inside a root), or larger than
            :data:`MAX_IMPORT_MB` (the message names the file, its size and the limit).
    """
    real = resolve_data_path(where, user_path)
    if not real.exists():
        raise ValueError(f"{user_path}: no such file or folder")
    size = source_bytes(real)
    if size > MAX_IMPORT_MB * 2**20:
        raise ValueError(
            f"{real.name}: {size / 2**20:,.0f} MB is more than the {MAX_IMPORT_MB} MB an import reads "
            "(it holds every row in memory); import a sample of it under the limit"
        )
    return real
