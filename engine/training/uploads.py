"""What a train job uploads as it goes, when artifacts live beyond this machine (``SENSEI_ARTIFACTS``).

* :class:`CheckpointUploader` — each checkpoint as soon as the trainer has saved it, so a run
  that dies resumes from it on any machine;
* :func:`push_wandb` — the run's W&B files once it has finished (offline runs are synced later,
  from whichever machine holds the key).

The run's model and records are pushed by :func:`engine.store.artifacts.push_run`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from engine.store.artifacts import Artifacts, ArtifactsError
from engine.training.resume import CHECKPOINT_NAME


class CheckpointUploader(TrainerCallback):
    """Uploads ``checkpoint-<step>`` after each save, ``trainer_state.json`` last (the mark of a
    complete checkpoint), and deletes remotely the checkpoints the trainer rotated away here
    (``student.save_total_limit``), so the remote copy holds what the local one does.

    A failed upload costs a resume point, not the run: ``warn`` is told and training goes on
    (the next checkpoint is uploaded whole, and the run's model is uploaded at the end).
    """

    def __init__(self, arts: Artifacts, warn: Callable[[str], None]):
        self.arts, self.warn = arts, warn

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir)
        try:
            self.arts.push(folder / f"checkpoint-{state.global_step}", last=("trainer_state.json",))
            kept = {p.name for p in folder.iterdir()}
            for name in self.arts.names(folder):
                if CHECKPOINT_NAME.match(name) and name not in kept:
                    self.arts.remove(folder / name)
        except ArtifactsError as err:
            step = state.global_step
            self.warn(f"checkpoint-{step} was not uploaded (a resume starts from an older one): {err}")


def push_wandb(arts: Artifacts, store_home: Path, run_id: str) -> None:
    """Upload a finished run's W&B sidecar and, when it is inside the workspace, its run folder."""
    from engine.training.wandb_links import find_run, sidecar_path

    info = find_run(store_home, run_id)
    if info is None:
        return
    if info.path and Path(info.path).resolve().is_relative_to(arts.home):
        arts.push(info.path)
    arts.push(sidecar_path(store_home, run_id))
