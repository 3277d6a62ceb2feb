"""OpenAI-compatible chat client for teachers (and judges): cached, concurrent, cost-accounted.

One :class:`ChatClient` answers a batch of chat requests against any endpoint that speaks the
chat-completions protocol (vLLM, TGI, Ollama, hosted APIs, ``transformers serve``, the demo
teacher). What it adds to the ``openai`` SDK:

* bounded concurrency (``TeacherSpec.concurrency`` requests in flight) and optional
  requests/tokens-per-minute limits (:mod:`engine.teacher.ratelimit`), checked before every attempt;
* retries with exponential backoff and jitter that honour ``Retry-After`` — the SDK's own,
  configured from ``max_retries`` and ``timeout_s``;
* an on-disk SQLite cache keyed by a hash of the request, so re-running a batch costs nothing
  and makes no HTTP call;
* tokens, latency and cost per answer; a failed request becomes a :class:`ChatResult` with
  ``error`` set instead of an exception that would sink the batch;
* a circuit breaker (:mod:`engine.teacher.breaker`): an endpoint that nothing could connect to
  for a while is not retried prompt by prompt; the batch stops with :class:`EndpointDownError`.

The API key is read from the environment variable *named* by ``TeacherSpec.api_key_env`` only
when a request actually has to be sent (or handed in by the caller, e.g. from Streamlit
secrets for a playground call), and only under a name the server declared
(:mod:`engine.teacher.keys`); it is never logged, cached or stored, and is scrubbed from
error messages in case an endpoint echoes request headers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import math
import os
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai

from engine.data.prompts import chat_messages, render_prompt
from engine.redaction import has_masked_credentials, redact_url
from engine.specs import TaskSpec, TeacherSpec
from engine.teacher.breaker import EndpointBreaker, EndpointDownError, watch
from engine.teacher.cache import cache_get, cache_put, open_cache
from engine.teacher.keys import require_declared
from engine.teacher.ratelimit import RateLimiter, estimate_tokens

Messages = list[dict[str, Any]]

# Token estimate of the request being sent by the current task, read by the HTTP request hook
# (which runs in the same task, before every attempt, retries included).
_ESTIMATE: contextvars.ContextVar[int] = contextvars.ContextVar("sensei_token_estimate", default=0)


POOL_REQUESTS = 32
"""Requests in flight per HTTP connection pool. The pool does work proportional to its
connections on every request (a socket probe per idle connection), so at 256 in flight one
pool spent more CPU per request than the request itself and throughput fell to ~0.7 of its
bound; pools of 32 keep that cost flat (``bench/teacher_throughput.py``)."""


class MissingApiKeyError(RuntimeError):
    """The environment variable named by ``api_key_env`` is not set in this process."""


@dataclass
class ChatResult:
    """One answer, or why there is none.

    Attributes:
        content: the answer text, or None when the request failed.
        error: why the request failed after all retries, or None.
        input_tokens: prompt tokens (as reported by the endpoint; kept for cached answers).
        output_tokens: completion tokens.
        latency_s: wall time of this call, retries included (about 0 for a cache hit).
        cost_usd: what this call cost (0 for a cache hit).
        cached: True when the answer came from the on-disk cache.
        request_hash: the cache key; identical requests share it.
        finish_reason: ``stop``, ``length``, ... as reported by the endpoint.
    """

    content: str | None
    error: str | None
    input_tokens: int
    output_tokens: int
    latency_s: float
    cost_usd: float
    cached: bool
    request_hash: str
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.content is not None


def cache_result(conn: sqlite3.Connection | None, key: str, r: ChatResult) -> None:
    """Store a successful answer in the cache (failures are not cached: they are asked again)."""
    if r.ok:
        cache_put(conn, key, r.content or "", r.input_tokens, r.output_tokens, r.latency_s, r.finish_reason)


def build_messages(task: TaskSpec, input_text: str) -> Messages:
    """The chat messages for one input: the task's system prompt (if any) and rendered prompt."""
    return chat_messages(render_prompt(task.prompt_template, input_text), task.system_prompt)


def resolve_api_key(spec: TeacherSpec, field: str = "teacher.api_key_env", given: str | None = None) -> str:
    """The API key for ``spec``: ``given`` or the environment variable the spec names;
    ``"EMPTY"`` if it names none.

    The name must be one the server declared (:mod:`engine.teacher.keys`), also for a key
    handed in (``given``, a Streamlit secret of that name): this is where a worker reads a key,
    so a job row crafted with any other name is refused here, before the variable is read.

    Args:
        spec: the teacher or judge endpoint.
        field: the spec path of ``api_key_env`` named in errors (``judge.endpoint.api_key_env``).
        given: the key itself when the caller holds it.

    Raises:
        engine.teacher.keys.UndeclaredKeyError: the name is not declared (same message whether
            or not the variable exists).
        MissingApiKeyError: the named variable is unset or empty (the message names it).
    """
    if not spec.api_key_env:
        return given or "EMPTY"  # local servers (vLLM, demo teacher) accept any key
    require_declared(spec.api_key_env, field)
    if given:
        return given
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise MissingApiKeyError(
            f"{field} names the environment variable {spec.api_key_env}, which is not "
            f"set in the worker's environment; export {spec.api_key_env}=... before starting Sensei"
        )
    return key


def request_hash(scope: str, model: str, messages: Messages, temperature: float, max_tokens: int) -> str:
    """Cache key of a request: sha256 of everything that determines the answer."""
    blob = json.dumps(
        {
            "scope": scope,
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def message_chars(messages: Messages) -> int:
    """Characters of all message contents (text parts of multi-part contents included)."""
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return total


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` and any credentials in URLs replaced by ``***`` (for error messages)."""
    text = redact_url(text)
    if not secret or secret == "EMPTY":
        return text
    return text.replace(secret, "***")


def _first_choice(resp: Any) -> dict[str, Any]:
    """The first choice of a chat-completions response body (``{}`` when there is none).

    Raises:
        ValueError: the body is not a JSON object (e.g. an HTML error page served with 200).
    """
    if not isinstance(resp, dict):
        raise ValueError(f"malformed response (not a JSON object): {str(resp)[:200]!r}")
    choices = resp.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


class Results:
    """Answers of one batch, filled in as they arrive (cache hits first), in request order."""

    def __init__(
        self, n: int, stats: dict[str, int], on_result: Callable[[int, ChatResult], None] | None
    ) -> None:
        self._results: list[ChatResult | None] = [None] * n
        self._stats = stats
        self._on_result = on_result

    def deliver(self, i: int, result: ChatResult) -> None:
        """Record the answer to request ``i``, count it, and tell the caller."""
        self._results[i] = result
        self._stats["errors" if result.error else "answered"] += 1
        if self._on_result is not None:
            self._on_result(i, result)

    def done(self) -> list[ChatResult]:
        """Every answer, in request order (each request gets exactly one)."""
        assert all(r is not None for r in self._results), "a request got no answer"
        return [r for r in self._results if r is not None]


def serve_cached(
    cache: Any,
    requests: list[Messages],
    hash_of: Callable[[Messages], str],
    deliver: Callable[[int, ChatResult], None],
    stats: dict[str, int],
) -> dict[str, list[int]]:
    """Deliver every cached answer; return the rest grouped by request hash.

    Identical requests in one batch share a key, so each is sent once (see
    :func:`deliver_to_all`). Shared by every client kind (HTTP and local).
    """
    todo: dict[str, list[int]] = {}
    for i, messages in enumerate(requests):
        key = hash_of(messages)
        hit = cache_get(cache, key)
        if hit is not None:
            stats["cache_hits"] += 1
            deliver(i, ChatResult(hit[0], None, hit[1], hit[2], 0.0, 0.0, True, key, hit[3]))
        else:
            todo.setdefault(key, []).append(i)
    return todo


def deliver_to_all(
    result: ChatResult, indices: list[int], deliver: Callable[[int, ChatResult], None]
) -> None:
    """Deliver one fresh answer to every copy of its request; copies are free cache hits."""
    deliver(indices[0], result)
    for i in indices[1:]:
        deliver(i, ChatResult(**{**result.__dict__, "cached": result.ok, "cost_usd": 0.0}))


class ChatClient:
    """Answers batches of chat requests for one teacher (or judge) spec.

    Args:
        spec: endpoint, model, sampling, concurrency, retries, prices, key variable name.
        cache_path: SQLite cache file (usually ``<store.home>/llm_cache.db``); None disables it.
        base_url_override: endpoint to call instead of ``spec.base_url`` (e.g. the demo teacher's
            port of the moment).
        cache_scope: what identifies the endpoint in cache keys; defaults to the base URL. Pass a
            stable name when the URL changes between runs but the answers do not.
        api_key: the key itself, for callers that hold it (a playground call with a Streamlit
            secret); kept in memory only. Default: read ``spec.api_key_env`` when needed.
            Either way the name must be declared (:mod:`engine.teacher.keys`).
        key_field: the spec path of ``api_key_env`` named in errors.

    Attributes:
        stats: counters of this client's lifetime: ``http_requests`` (attempts, retries
            included), ``cache_hits``, ``answered``, ``errors``.
        throttled_s: seconds requests waited for the rate limits (0 without limits).
    """

    def __init__(
        self,
        spec: TeacherSpec,
        cache_path: Path | None,
        base_url_override: str | None = None,
        cache_scope: str | None = None,
        api_key: str | None = None,
        key_field: str = "teacher.api_key_env",
    ):
        self.spec = spec
        self._api_key = api_key
        self.key_field = key_field
        self.throttled_s = 0.0
        self.base_url = base_url_override or spec.base_url
        if not self.base_url:
            raise ValueError(f"teacher of kind {spec.kind!r} has no base_url; pass base_url_override")
        if has_masked_credentials(self.base_url):
            raise ValueError(
                f"teacher.base_url {self.base_url} had credentials in it, which Sensei never stores; "
                "remove them, export the key in an environment variable and name that variable "
                "in teacher.api_key_env"
            )
        self.endpoint = redact_url(self.base_url)
        """The base URL as it may be shown and logged."""
        self.cache_scope = cache_scope or self.base_url.rstrip("/")
        self.cache_path = Path(cache_path) if cache_path else None
        self.stats: Counter[str] = Counter()

    def request_hash(self, messages: Messages) -> str:
        """Cache key of one request to this client's endpoint and model."""
        return request_hash(
            self.cache_scope, self.spec.identity(), messages, self.spec.temperature, self.spec.max_tokens
        )

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD price of a call with these token counts."""
        return (
            input_tokens * self.spec.price_input_per_m + output_tokens * self.spec.price_output_per_m
        ) / 1e6

    # --------------------------------------------------------------- requests
    def _sdk_client(
        self,
        api_key: str,
        breaker: EndpointBreaker,
        before_attempt: Callable[[Any], Any],
        tls: ssl.SSLContext,
    ) -> openai.AsyncOpenAI:
        """An SDK client with its own connection pool, watched by ``breaker``."""
        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [before_attempt]}, verify=tls)
        watch(http, breaker)
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key,
            http_client=http,
            max_retries=self.spec.max_retries,
            timeout=self.spec.timeout_s,
        )

    async def _send(
        self, client: openai.AsyncOpenAI, messages: Messages, key: str, limiter: RateLimiter, api_key: str
    ) -> ChatResult:
        start = time.perf_counter()
        estimate = estimate_tokens(message_chars(messages), self.spec.max_tokens)
        _ESTIMATE.set(estimate)
        body = {
            "model": self.spec.model,
            "messages": messages,
            "temperature": self.spec.temperature,
            "max_tokens": self.spec.max_tokens,
        }
        try:
            # The SDK's generic POST keeps its retries, backoff, Retry-After and error types, but
            # skips what ``chat.completions.create`` adds: a walk of every message through its
            # TypedDict transforms and a pydantic model of the response. Those cost ~0.7 ms of
            # CPU per request (a third of the client's total), which bounds throughput against
            # fast endpoints and, with many requests finishing together, adds queueing delay.
            resp: Any = await client.post("/chat/completions", body=body, cast_to=dict)
            choice, usage = _first_choice(resp), resp.get("usage") or {}
            n_in, n_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            limiter.correct(estimate, n_in + n_out)
        except openai.APIStatusError as err:
            error = f"HTTP {err.status_code}: {err.message}"
        except openai.APITimeoutError:
            error = f"timed out after {self.spec.timeout_s:g} s ({self.spec.max_retries} retries)"
        except openai.APIConnectionError as err:
            error = f"cannot reach {self.endpoint}: {err.__cause__ or err}"
        except Exception as err:  # a malformed response must not sink the batch
            error = f"{type(err).__name__}: {err}"
        else:
            content = (choice.get("message") or {}).get("content")
            if content is not None and not isinstance(content, str):
                content = None
            return ChatResult(
                content=content,
                error=None if content is not None else "empty response (no message content)",
                input_tokens=n_in,
                output_tokens=n_out,
                latency_s=time.perf_counter() - start,
                cost_usd=self.cost(n_in, n_out),  # a failed-but-billed answer still costs
                cached=False,
                request_hash=key,
                finish_reason=choice.get("finish_reason"),
            )
        # An endpoint may echo request headers in its error body; the key must not reach the store.
        error = redact(error, api_key)
        return ChatResult(None, error, 0, 0, time.perf_counter() - start, 0.0, False, key)

    async def acomplete_many(
        self,
        requests: list[Messages],
        on_result: Callable[[int, ChatResult], None] | None = None,
    ) -> list[ChatResult]:
        """Answer many requests; results come back in request order.

        Args:
            requests: one message list per request.
            on_result: called as ``on_result(i, result)`` as each request finishes (cache hits
                first), so callers can persist progress while the batch runs.

        Raises:
            engine.teacher.keys.UndeclaredKeyError: some request is not cached and the key
                name is not declared on this server.
            MissingApiKeyError: some request is not cached and the key variable is not set.
            EndpointDownError: the endpoint could not be reached for a while (see
                :mod:`engine.teacher.breaker`); answers delivered before stay delivered.
        """
        results = Results(len(requests), self.stats, on_result)
        deliver = results.deliver
        cache = open_cache(self.cache_path)
        try:
            todo = serve_cached(cache, requests, self.request_hash, deliver, self.stats)
            if not todo:
                return results.done()

            # Only now: cached batches need no key.
            api_key = resolve_api_key(self.spec, self.key_field, given=self._api_key)
            limiter = RateLimiter(self.spec.requests_per_minute, self.spec.tokens_per_minute)

            async def before_attempt(_request: Any) -> None:
                # Runs before every attempt, the SDK's retries included, so retries are throttled too.
                await limiter.acquire(_ESTIMATE.get())
                self.stats["http_requests"] += 1

            tasks: list[asyncio.Task[None]] = []

            def stop_asking() -> None:
                for task in tasks:
                    task.cancel()

            breaker = EndpointBreaker(self.endpoint, on_trip=stop_asking)
            limit = asyncio.Semaphore(self.spec.concurrency)
            tls = httpx2.create_ssl_context()  # loading the CA bundle takes ~0.1 s: once, for all pools
            async with contextlib.AsyncExitStack() as stack:
                # Several small connection pools, not one big one (see POOL_REQUESTS).
                pools = [
                    await stack.enter_async_context(self._sdk_client(api_key, breaker, before_attempt, tls))
                    for _ in range(math.ceil(self.spec.concurrency / POOL_REQUESTS))
                ]
                in_flight = [0] * len(pools)

                async def one(key: str, indices: list[int]) -> None:
                    async with limit:
                        pool = in_flight.index(min(in_flight))  # the least busy pool
                        in_flight[pool] += 1
                        try:
                            result = await self._send(
                                pools[pool], requests[indices[0]], key, limiter, api_key
                            )
                        finally:
                            in_flight[pool] -= 1
                    cache_result(cache, key, result)
                    deliver_to_all(result, indices, deliver)

                tasks.extend(asyncio.create_task(one(key, idx)) for key, idx in todo.items())
                try:
                    # A tripped breaker cancels the tasks; gather still waits for every one of them.
                    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                finally:
                    self.throttled_s += limiter.waited_s
            if breaker.tripped:
                raise EndpointDownError(breaker.message())
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            return results.done()
        finally:
            if cache is not None:
                cache.close()

    def complete_many(
        self,
        requests: list[Messages],
        on_result: Callable[[int, ChatResult], None] | None = None,
    ) -> list[ChatResult]:
        """Synchronous :meth:`acomplete_many` (runs its own event loop; not inside a running one)."""
        return asyncio.run(self.acomplete_many(requests, on_result))
