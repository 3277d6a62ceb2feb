"""A local Hugging Face model as the teacher, for users without an endpoint.

:class:`LocalTeacher` answers the same batches as :class:`engine.teacher.client.ChatClient` and returns the
same :class:`~engine.teacher.client.ChatResult`\\ s, through the same on-disk cache, so the teacher job does
not care which one it has. The model (``TeacherSpec.model``: a Hub id or a local folder) is
loaded once per process, only when some request is not cached, and answers greedily in
batches of ``TeacherSpec.concurrency`` prompts with left padding
(:func:`engine.training.generate.generate`).

Chat messages become the prompt through the tokenizer's chat template when it has one;
otherwise (e.g. the tiny demo student) the message contents are joined by blank lines.
Tokens are counted with the model's own tokenizer; cost is 0; each answer's latency is the
wall time of the batch it was generated in.

Cache keys are scoped by what determines the answers: the resolved folder plus a fingerprint
of its files (so retraining a model in place re-asks), or the Hub id plus revision.

A folder is loaded only from under the model roots (:mod:`engine.training.model_refs`):
:class:`LocalTeacher` and :func:`local_scope` check ``teacher.model`` before they look at it,
in the playground and in the worker alike.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.data.prompts import has_chat_template, render_messages
from engine.specs import TeacherSpec
from engine.teacher.cache import open_cache
from engine.teacher.client import (
    ChatResult,
    Messages,
    Results,
    cache_result,
    deliver_to_all,
    request_hash,
    serve_cached,
)
from engine.training.model_refs import resolve_model_ref

if TYPE_CHECKING:
    from engine.store import Store

# One loaded model per process: a worker answers with one teacher, and the playground usually
# tries the same one several times.
_LOADED: dict[tuple[str, str | None], tuple[Any, Any]] = {}


def folder_fingerprint(folder: Path) -> str:
    """Hash of a model folder's file names, sizes and modification times (cheap, no reading)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def local_scope(spec: TeacherSpec, home: Store | Path | str) -> str:
    """What identifies a local teacher in request hashes (see the module docstring).

    Raises:
        engine.training.model_refs.ModelNotAllowed: a folder outside the model roots of the
            workspace ``home``.
    """
    folder = Path(resolve_model_ref(home, spec.model, "teacher.model"))
    if folder.is_dir():
        return f"local:{folder}#{folder_fingerprint(folder)}"
    return f"hf:{spec.model}@{spec.revision or 'main'}"


def load_teacher_model(model: str, revision: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a local teacher, loaded once per process (the last one kept).

    Raises:
        RuntimeError: the model cannot be loaded (the message names it).
    """
    key = (model, revision)
    if key not in _LOADED:
        from engine.training.student import load_student  # torch: only when a model is needed

        try:
            loaded = load_student(model, revision)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"local teacher: cannot load model {model!r}: {err}") from err
        _LOADED.clear()
        _LOADED[key] = loaded
    return _LOADED[key]


class LocalTeacher:
    """Answers batches of chat requests with a local model (same interface as ``ChatClient``).

    Args:
        spec: a ``local``-kind teacher spec (model, revision, max_tokens, batch size).
        cache_path: the SQLite answer cache; None disables it.
        cache_scope: scope of request hashes; default :func:`local_scope`.
        home: the workspace (or its folder), whose model roots ``spec.model`` must be under
            when it is a folder.

    Attributes:
        stats: ``generated`` (prompts run through the model), ``cache_hits``, ``answered``,
            ``errors``, ``http_requests`` (always 0).
        throttled_s: always 0 (rate limits apply to endpoints only).

    Raises:
        engine.training.model_refs.ModelNotAllowed: ``spec.model`` is a folder outside the
            model roots (checked here, before anything is loaded or cached).
    """

    def __init__(
        self,
        spec: TeacherSpec,
        cache_path: Path | None,
        cache_scope: str | None = None,
        *,
        home: Store | Path | str,
    ):
        self.spec = spec
        self.model_ref = resolve_model_ref(home, spec.model, "teacher.model")
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache_scope = cache_scope or local_scope(spec, home)
        self.stats: Counter[str] = Counter()
        self.throttled_s = 0.0

    def request_hash(self, messages: Messages) -> str:
        """Cache key of one request to this model."""
        return request_hash(
            self.cache_scope, self.spec.identity(), messages, self.spec.temperature, self.spec.max_tokens
        )

    def complete_many(
        self,
        requests: list[Messages],
        on_result: Callable[[int, ChatResult], None] | None = None,
    ) -> list[ChatResult]:
        """Answer many requests; results come back in request order.

        Args:
            requests: one message list per request.
            on_result: called as ``on_result(i, result)`` as each answer is ready (cache hits
                first, then batch by batch).

        Raises:
            RuntimeError: the model cannot be loaded.
        """
        results = Results(len(requests), self.stats, on_result)
        deliver = results.deliver
        cache = open_cache(self.cache_path)
        try:
            todo = serve_cached(cache, requests, self.request_hash, deliver, self.stats)
            if not todo:
                return results.done()
            model, tokenizer = load_teacher_model(self.model_ref, self.spec.revision)
            keys = list(todo)
            for start in range(0, len(keys), self.spec.concurrency):
                batch = keys[start : start + self.spec.concurrency]
                for key, result in zip(
                    batch, self._generate(model, tokenizer, batch, requests, todo), strict=True
                ):
                    cache_result(cache, key, result)
                    deliver_to_all(result, todo[key], deliver)
            return results.done()
        finally:
            if cache is not None:
                cache.close()

    def _generate(
        self,
        model: Any,
        tokenizer: Any,
        keys: list[str],
        requests: list[Messages],
        todo: dict[str, list[int]],
    ) -> list[ChatResult]:
        from engine.training.generate import generate

        prompts = [render_messages(tokenizer, requests[todo[k][0]]) for k in keys]
        start = time.perf_counter()
        try:
            texts = generate(
                model,
                tokenizer,
                prompts,
                self.spec.max_tokens,
                batch_size=len(prompts),
                add_special_tokens=not has_chat_template(tokenizer),
            )
        except (RuntimeError, ValueError) as err:  # e.g. out of memory: fail this batch only
            took = time.perf_counter() - start
            return [
                ChatResult(None, f"local generate failed: {err}", 0, 0, took, 0.0, False, k) for k in keys
            ]
        took = time.perf_counter() - start
        self.stats["generated"] += len(prompts)
        out = []
        for key, prompt, text in zip(keys, prompts, texts, strict=True):
            n_in = len(tokenizer(prompt).input_ids)
            n_out = len(tokenizer(text, add_special_tokens=False).input_ids)
            finish = "length" if n_out >= self.spec.max_tokens else "stop"
            out.append(ChatResult(text, None, n_in, n_out, took, 0.0, False, key, finish))
        return out
