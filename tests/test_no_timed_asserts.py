"""No test asserts a duration: wall time on a shared 2-core machine proves nothing and flakes.

Speed belongs in ``bench/`` (ratios against a baseline in the same run). This scans every
test module's ``assert`` statements for a comparison between something timed (a clock call,
or a name or key that holds seconds) and a number. Deadlines of polling loops
(``time.monotonic() < deadline``) and "it was measured" checks (``latency_s > 0``) pass.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCKS = {"time", "monotonic", "perf_counter", "process_time", "monotonic_ns", "perf_counter_ns"}
TIMED_NAME = re.compile(r"(^|_)(elapsed|duration|seconds|secs|wall|runtime)(_|$)|(?<!per)_s$")


def _timed(node: ast.AST) -> bool:
    """Whether ``node`` reads a clock or a value named like a duration."""
    for sub in ast.walk(node):
        func = sub.func if isinstance(sub, ast.Call) else None
        if isinstance(func, ast.Attribute) and func.attr in CLOCKS and ast.unparse(func.value) == "time":
            return True
        name = None
        if isinstance(sub, ast.Name):
            name = sub.id
        elif isinstance(sub, ast.Attribute):
            name = sub.attr
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            name = sub.value  # a key: report["total_seconds"]
        if name and TIMED_NAME.search(name):
            return True
    return False


def _nonzero_number(node: ast.AST) -> bool:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.BinOp):  # 3 * 60
            return _nonzero_number(node.left) and _nonzero_number(node.right)
        return False
    return isinstance(value, int | float) and not isinstance(value, bool) and value != 0


def timed_asserts(source: str) -> list[int]:
    """Line numbers of asserts that compare something timed with a (non-zero) number."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assert):
            continue
        for cmp in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
            sides = [cmp.left, *cmp.comparators]
            if any(_nonzero_number(s) for s in sides) and any(_timed(s) for s in sides):
                found.append(node.lineno)
                break
    return found


def test_the_scanner_catches_timed_asserts_and_spares_the_rest() -> None:
    timed = [
        'assert report["total_seconds"] < 180',
        "assert time.perf_counter() - start < 5",
        "assert elapsed >= 0.45 and ok",
        "assert proc.wait(timeout=8) == 0 and time.monotonic() - start > 3.0",
        "assert result.wall_time_s < 3 * 60",
    ]
    fine = [
        "assert time.monotonic() < deadline",
        "assert r.latency_s > 0 and r.ok",
        "assert result.tokens_per_s > 1000",
        "assert clock.now - 100.0 == pytest.approx(9.0)",
        "assert proc.wait(timeout=8) == 0",
        "assert path.stat().st_mtime > 1",
    ]
    assert [bool(timed_asserts(s)) for s in timed] == [True] * len(timed)
    assert [bool(timed_asserts(s)) for s in fine] == [False] * len(fine)


def test_no_test_asserts_a_duration() -> None:
    offenders = [
        f"{path.name}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in timed_asserts(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "move timings to bench/: " + ", ".join(offenders)
