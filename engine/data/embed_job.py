"""Embed job: compute and cache the sentence embeddings of a dataset's prompts.

Run by a worker (``python -m engine worker``) as ``main(ctx)`` for job kind ``embed``;
enqueue one with :func:`queue_embed`. The embeddings land in
``<workspace>/datasets/<id>/embeddings.npy`` (see :mod:`engine.data.embeddings`), where the
Data page picks them up to draw the cluster map.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError

from engine.access import Actor, Right, check, done
from engine.context import JobContext
from engine.data.embeddings import dataset_embeddings
from engine.specs import Spec, SpecError, format_validation_error
from engine.store import Store


class EmbedJobSpec(Spec):
    """The ``embed`` job: which dataset to embed."""

    dataset_id: str = Field(min_length=1)
    """The dataset whose prompts are embedded."""


def main(ctx: JobContext) -> None:
    """Job entry point: embed every prompt of ``ctx.spec["dataset_id"]`` and cache the result.

    Raises:
        engine.specs.SpecError: the spec is invalid (the message names the field).
        KeyError: no such dataset.
    """
    try:
        job = EmbedJobSpec.model_validate(ctx.spec)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "embed job spec")) from None
    if ctx.store.get_dataset(job.dataset_id) is None:
        raise KeyError(f"no dataset {job.dataset_id}")
    ctx.progress(0.0, "loading the embedding model", force=True)
    emb = dataset_embeddings(ctx.store, job.dataset_id, progress=ctx.progress)
    ctx.log.info("embedded %d prompts of %s (%d dims)", len(emb), job.dataset_id, emb.shape[1])
    ctx.progress(1.0, f"embedded {len(emb)} prompts", force=True)


def _may_embed(store: Store, dataset_id: str, actor: Actor) -> None:
    """Refuse (and audit) an actor who may not launch, then a dataset that does not exist."""
    check(store, actor, Right.LAUNCH, "embed datasets", dataset_id)
    if store.get_dataset(dataset_id) is None:
        raise KeyError(f"no dataset {dataset_id}")


def queue_embed(store: Store, dataset_id: str, *, actor: Actor) -> str:
    """Queue an ``embed`` job for a dataset; returns the job id.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        KeyError: no such dataset.
    """
    _may_embed(store, dataset_id, actor)
    job_id = store.enqueue("embed", {"dataset_id": dataset_id})
    done(store, actor, "embed", job_id, dataset=dataset_id)
    return job_id


def embed_now(store: Store, dataset_id: str, *, actor: Actor) -> None:
    """Embed a small dataset in this process (the page's inline path); cached like the job's.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        KeyError: no such dataset.
    """
    _may_embed(store, dataset_id, actor)
    dataset_embeddings(store, dataset_id)
    done(store, actor, "embed", dataset_id, dataset=dataset_id)


def latest_embed_job(store: Store, dataset_id: str) -> dict[str, Any] | None:
    """The newest ``embed`` job of a dataset, whatever its status."""
    for job in store.list_jobs():
        if job["kind"] == "embed" and (job.get("spec") or {}).get("dataset_id") == dataset_id:
            return job
    return None
