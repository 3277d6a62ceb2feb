"""A simulated teacher: an OpenAI-compatible chat-completions server answering from ground truth.

The demo needs a teacher that is offline, fast and *imperfect*, so that filtering, judging
and cost accounting have real work. This server looks up the last user message in a table of
``prompt -> reference`` answers and, for a deterministic fraction of prompts
(``--error-rate``), returns a flawed answer instead: a wrong field value, prose around the
JSON, a missing field, or truncated JSON. ``--fail-rate`` injects 429 (with ``Retry-After``)
and 500 responses so clients must retry; ``--hang-rate`` makes some attempts hang for
``--hang-s`` seconds (past a client's timeout) before answering 504; ``--latency`` simulates
a slow model (an answer whose client has gone meanwhile counts as ``abandoned``). Faults
are deterministic per (prompt, attempt), and at most ``_MAX_FAULTS_PER_PROMPT`` in a row
hit one prompt. ``/stats`` counts requests, faults and, per prompt (:func:`prompt_key`),
the successful answers served.

Run it by hand::

    python -m engine.demo.simulated_teacher --port 8001 --data prompts.jsonl --error-rate 0.15

or, from Python, :func:`start_demo_teacher` (a context manager yielding the base URL).
Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, ``GET /stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine.demo.task import (
    DEMO_FIELDS,
    DEMO_TEMPLATE,
    INTENTS,
    PRODUCTS,
    URGENCIES,
    generate_examples,
    render_prompt,
)

__all__ = [
    "corrupt",
    "create_app",
    "load_answers",
    "main",
    "prompt_key",
    "start_demo_teacher",
    "teacher_answer",
]

_VALUES = {"intent": INTENTS, "product": PRODUCTS, "urgency": URGENCIES}
# Consecutive injected failures per prompt are capped so a client with a few retries succeeds.
_MAX_FAULTS_PER_PROMPT = 2


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from its arguments (stable across processes)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def prompt_key(prompt: str) -> str:
    """Short id of a prompt in ``/stats``' ``answers_per_prompt``."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def approx_tokens(text: str) -> int:
    """Rough token count (about four characters per token), good enough for cost demos."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def load_answers(path: str | Path) -> dict[str, str]:
    """Read a JSONL file of ``{"prompt": ..., "reference": ...}`` into a lookup table."""
    answers: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answers[row["prompt"]] = row["reference"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{line_no}: expected a prompt/reference object ({err})") from None
    return answers


def corrupt(reference: str, key: str, seed: int) -> str:
    """A plausible mistake derived from ``reference``; which one depends on ``key`` and ``seed``."""
    try:
        obj = json.loads(reference)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or not obj:
        return f"I think the answer is: {reference}"
    kind = int(_unit(seed, "kind", key) * 4)
    if kind == 0:  # a wrong value, still perfectly valid JSON (only a judge or reference catches it)
        field = sorted(obj)[int(_unit(seed, "field", key) * len(obj))]
        value = str(obj[field])
        choices = [v for v in _VALUES.get(field, ()) if v != value]
        if choices:
            obj[field] = choices[int(_unit(seed, "value", key) * len(choices))]
        else:  # free-form value such as an order id: garble one character
            obj[field] = value[:-1] + str((int(value[-1]) + 1) % 10 if value[-1:].isdigit() else "X")
        return json.dumps(obj, separators=(", ", ": "))
    if kind == 1:  # chatty prose around the JSON
        return f"Sure! Here is the extracted ticket:\n{reference}\nLet me know if you need anything else."
    if kind == 2:  # a field left out
        obj.pop(sorted(obj)[int(_unit(seed, "drop", key) * len(obj))])
        return json.dumps(obj, separators=(", ", ": "))
    return reference[: max(1, len(reference) * 2 // 3)]  # cut off mid-object: invalid JSON


def teacher_answer(prompt: str, answers: dict[str, str], error_rate: float, seed: int) -> tuple[str, bool]:
    """The teacher's answer to one prompt and whether it is a deliberate mistake."""
    reference = answers.get(prompt)
    if reference is None:
        # Not ours: answer something generic rather than failing the caller's batch.
        if "json" in prompt.lower():
            return json.dumps({f: "unknown" for f in DEMO_FIELDS}, separators=(", ", ": ")), False
        return "I am not sure how to answer that.", False
    if _unit(seed, "error", prompt) < error_rate:
        return corrupt(reference, prompt, seed), True
    return reference, False


_JUDGE_MARKER = "Decide whether the answer to the task"  # engine.judges.prompts
_PAIR_MARKER = "Decide which of two answers to the task"
_SECTION = r"<{0}>\n(.*?)\n</{0}>"


def _section(user: str, tag: str) -> str | None:
    found = re.search(_SECTION.format(tag), user, re.DOTALL)
    return found.group(1).strip() if found else None


def _demo_grade(text: str, reference: str | None) -> tuple[bool, str]:
    """Good with a reference: equal to it; without: a JSON object."""
    if reference is not None:
        ok = text == reference
        return ok, "matches the reference" if ok else "differs from the reference"
    try:
        ok = isinstance(json.loads(text), dict)
    except ValueError:
        ok = False
    return ok, "a JSON object" if ok else "not a JSON object"


def demo_verdict(system: str, user: str) -> str | None:
    """The demo's judge reply (pointwise or pairwise), or None when the request is not a judge prompt.

    Pointwise, with a reference shown: accept iff the answer equals it; without: accept iff the
    answer is a JSON object. Pairwise: the answer that passes that test wins; both or neither
    is a tie. Good enough to exercise the judge pipelines end to end.
    """
    reference = _section(user, "reference")
    if _PAIR_MARKER in system:
        (good_a, why_a), (good_b, why_b) = (
            _demo_grade(_section(user, tag) or "", reference) for tag in ("answer_a", "answer_b")
        )
        winner = "tie" if good_a == good_b else ("A" if good_a else "B")
        return json.dumps({"winner": winner, "reason": f"A: {why_a}; B: {why_b}"})
    if _JUDGE_MARKER not in system:
        return None
    ok, reason = _demo_grade(_section(user, "answer") or "", reference)
    return json.dumps({"verdict": "accept" if ok else "reject", "reason": reason})


def _text(content: Any) -> str:
    """Message content as text (a string, or a list of ``{"type": "text"}`` parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {429: "rate_limit_error", 500: "server_error"}.get(status, "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def create_app(
    answers: dict[str, str],
    *,
    error_rate: float = 0.15,
    seed: int = 0,
    latency: float = 0.0,
    fail_rate: float = 0.0,
    retry_after: float = 0.05,
    model: str = "demo-teacher",
    hang_rate: float = 0.0,
    hang_s: float = 5.0,
) -> FastAPI:
    """The FastAPI app of the simulated teacher (see the module docstring for behaviour)."""
    app = FastAPI(title="Sensei demo teacher", docs_url=None, redoc_url=None)
    stats: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    answered: Counter[str] = Counter()  # successful answers served, per prompt_key

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "prompts": len(answers)}

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return {**stats, "answers_per_prompt": dict(answered)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "sensei"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        stats["requests"] += 1
        try:
            body = await request.json()
            messages = body["messages"]
            prompt = next(_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user")
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            stats["bad_requests"] += 1
            return _error(400, "messages must be a list with at least one user message")
        if body.get("stream"):
            return _error(400, "streaming is not supported by the demo teacher")

        # Deterministic faults: attempt k of a prompt fails iff its hash says so (k is capped).
        attempt = attempts[prompt]
        attempts[prompt] += 1
        if attempt < _MAX_FAULTS_PER_PROMPT and _unit(seed, "hang", prompt, attempt) < hang_rate:
            stats["faults_timeout"] += 1
            await asyncio.sleep(hang_s)  # the client gives up first; its retry is a new attempt
            return _error(504, "gateway timeout (injected hang)")
        if attempt < _MAX_FAULTS_PER_PROMPT and _unit(seed, "fail", prompt, attempt) < fail_rate:
            if _unit(seed, "fail-kind", prompt, attempt) < 0.5:
                stats["faults_429"] += 1
                headers = {
                    "Retry-After": str(max(1, math.ceil(retry_after))),
                    "retry-after-ms": str(int(retry_after * 1000)),
                }
                return _error(429, "rate limited (injected by the demo teacher)", headers)
            stats["faults_500"] += 1
            return _error(500, "internal error (injected by the demo teacher)")

        if latency > 0:
            await asyncio.sleep(latency)
            if await request.is_disconnected():  # e.g. the client was killed while we "thought"
                stats["abandoned"] += 1
                return _error(499, "client closed the request")
        system = next((_text(m.get("content")) for m in messages if m.get("role") == "system"), "")
        verdict = demo_verdict(system, prompt)
        if verdict is not None:
            content, corrupted = verdict, False
        else:
            content, corrupted = teacher_answer(prompt, answers, error_rate, seed)
        stats["answered"] += 1
        answered[prompt_key(prompt)] += 1
        stats["corrupted"] += int(corrupted)
        stats["unknown_prompts"] += int(prompt not in answers)
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and approx_tokens(content) > limit:
            content, finish = content[: limit * 4], "length"
        prompt_tokens = sum(approx_tokens(_text(m.get("content"))) + 3 for m in messages)
        completion_tokens = approx_tokens(content)
        return JSONResponse(
            {
                "id": f"chatcmpl-demo-{stats['answered']}",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model") or model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish,
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    return app


def _exit_with_parent(parent_pid: int) -> None:
    # A worker killed with SIGKILL cannot stop its teacher; the orphan notices and exits.
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m engine.demo.simulated_teacher [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m engine.demo.simulated_teacher",
        description="Simulated OpenAI-compatible teacher for the demo task.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    add("--port", type=int, default=8001, help="port (0: any free port, printed on start)")
    add("--fd", type=int, default=None, help=argparse.SUPPRESS)  # inherited listening socket
    add("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # exit when it dies
    add("--data", type=Path, help="JSONL of {prompt, reference}; default: generate demo prompts")
    add("--demo-examples", type=int, default=1200, help="prompts to generate without --data")
    add("--error-rate", type=float, default=0.15, help="fraction of deliberately flawed answers")
    add("--seed", type=int, default=0, help="seed of the error and fault patterns")
    add("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    add("--fail-rate", type=float, default=0.0, help="fraction of attempts answered 429/500")
    add("--retry-after", type=float, default=0.05, help="seconds advertised in 429 responses")
    add("--hang-rate", type=float, default=0.0, help="fraction of attempts that hang, then 504")
    add("--hang-s", type=float, default=5.0, help="seconds a hanging attempt waits")
    add("--model", default="demo-teacher", help="model name listed by /v1/models")
    args = parser.parse_args(argv)

    if args.data:
        try:
            answers = load_answers(args.data)
        except (OSError, ValueError) as err:
            parser.error(f"--data: {err}")
    else:
        examples = generate_examples(args.demo_examples, args.seed)
        answers = {render_prompt(DEMO_TEMPLATE, e["input"]): e["reference"] for e in examples}
    app = create_app(
        answers,
        error_rate=args.error_rate,
        seed=args.seed,
        latency=args.latency,
        fail_rate=args.fail_rate,
        retry_after=args.retry_after,
        model=args.model,
        hang_rate=args.hang_rate,
        hang_s=args.hang_s,
    )

    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)  # family and type are read from the descriptor
    else:
        sock = socket.create_server((args.host, args.port), backlog=512)
        host, port = sock.getsockname()[:2]
        print(f"demo teacher: {len(answers)} prompts, http://{host}:{port}/v1", file=sys.stderr, flush=True)

    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()

    import uvicorn  # imported late: only the serving process needs it

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def start_demo_teacher(
    data_path: str | Path,
    error_rate: float = 0.15,
    seed: int = 0,
    latency: float = 0.0,
    fail_rate: float = 0.0,
    retry_after: float = 0.05,
    startup_timeout: float = 20.0,
    hang_rate: float = 0.0,
    hang_s: float = 5.0,
) -> Iterator[str]:
    """Run the demo teacher in a subprocess for the duration of a ``with`` block.

    The listening socket is bound here (port 0: the kernel picks a free port) and handed to
    the child, so there is no window in which another process could take the port.

    Args:
        data_path: JSONL of ``{"prompt", "reference"}`` rows to answer from.
        error_rate: fraction of deliberately flawed answers.
        seed: seed of the error and fault patterns.
        latency: seconds the server waits before each answer.
        fail_rate: fraction of attempts answered with an injected 429/500.
        retry_after: seconds advertised in the injected 429 responses.
        startup_timeout: seconds to wait for ``/health`` before giving up.
        hang_rate: fraction of attempts that hang for ``hang_s`` seconds, then answer 504.
        hang_s: how long a hanging attempt waits (set it above the client's timeout).

    Yields:
        The base URL for an OpenAI client, e.g. ``http://127.0.0.1:40123/v1``.

    Raises:
        RuntimeError: the server exited or did not become healthy in time (with its stderr).
    """
    sock = socket.create_server(("127.0.0.1", 0), backlog=512)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cmd = [
        sys.executable,
        "-m",
        "engine.demo.simulated_teacher",
        "--fd",
        str(sock.fileno()),
        "--data",
        str(data_path),
        "--error-rate",
        str(error_rate),
        "--seed",
        str(seed),
        "--latency",
        str(latency),
        "--fail-rate",
        str(fail_rate),
        "--retry-after",
        str(retry_after),
        "--hang-rate",
        str(hang_rate),
        "--hang-s",
        str(hang_s),
        "--parent-pid",
        str(os.getpid()),
    ]
    # The child must import ``engine`` whatever the caller's working directory is.
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    # stderr goes to a file, not a pipe: nobody reads a pipe while the server runs, and a full
    # pipe would block it.
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen(
                cmd,
                pass_fds=(sock.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        finally:
            sock.close()  # the child holds its own copy
        try:
            _wait_healthy(proc, base, startup_timeout, stderr)
            yield f"{base}/v1"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_healthy(proc: subprocess.Popen, base: str, timeout: float, stderr: IO[bytes]) -> None:
    def server_stderr() -> str:
        stderr.seek(0)
        return stderr.read().decode(errors="replace").strip()[-4000:]

    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2.0) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"demo teacher exited with code {proc.returncode}:\n{server_stderr()}")
            try:
                if http.get(f"{base}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"demo teacher did not answer {base}/health within {timeout:g} s:\n{server_stderr()}"
                )
            time.sleep(0.05)


if __name__ == "__main__":
    main()
