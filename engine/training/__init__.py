"""Student training: loading (hub id, local folder, tiny built-from-config), SFT, DPO, generation.

* :mod:`engine.training.job` — the train job: one ablation cell, trained then scored;
* :mod:`engine.training.student`, :mod:`~engine.training.formats` — the student and how it sees a prompt;
* :mod:`engine.training.sft`, :mod:`~engine.training.trainer`, :mod:`~engine.training.varlen`,
  :mod:`~engine.training.packing` — SFT with a completion-only loss, padding-free and packing;
* :mod:`engine.training.dpo`, :mod:`~engine.training.dpo_stage`, :mod:`~engine.training.pairs` — DPO;
* :mod:`engine.training.resume` — continue a run from its last checkpoint;
* :mod:`engine.training.tracking`, :mod:`~engine.training.wandb_links` — Weights & Biases;
* :mod:`engine.training.metadata`, :mod:`~engine.training.export` — run records, merge and export.
"""
