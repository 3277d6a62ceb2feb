"""Child processes that die with their parent (Linux ``PR_SET_PDEATHSIG``).

A model server under its idle guard, a job's worker under its Ray task, and every rank
``accelerate launch`` starts under that worker must not outlive the process that owns them:
an orphan would keep a GPU busy, or keep writing to the store after its job was ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DIE_WITH_PARENT_ENV = "SENSEI_DIE_WITH_PARENT"
"""Set (to a signal number) in a worker's environment: the worker, and each process it
starts with the same environment (``accelerate launch`` ranks), asks for that signal when its
parent dies (:func:`die_with_parent_if_asked`)."""


def die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when its parent dies.

    ``prctl`` is looked up here, in the parent: the function that runs between fork and exec
    only calls it (loading a library there can deadlock a threaded parent such as a Ray
    worker). Where there is no ``prctl`` (not Linux), the returned function does nothing.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None

    def _ask() -> None:
        prctl(PR_SET_PDEATHSIG, sig)

    return _ask


def die_with_parent_if_asked() -> None:
    """In a process whose environment names :data:`DIE_WITH_PARENT_ENV`: die with the parent."""
    value = os.environ.get(DIE_WITH_PARENT_ENV)
    if value:
        with contextlib.suppress(ValueError):
            die_with_parent(int(value))()
