"""Requests/tokens-per-minute limits: token buckets on a fake clock, then a real client run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.demo.simulated_teacher import start_demo_teacher
from engine.teacher.client import ChatClient
from engine.teacher.ratelimit import RateLimiter, TokenBucket, estimate_tokens


class FakeClock:
    """A clock that only moves when the limiter sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_estimate_counts_prompt_chars_and_the_answer_limit() -> None:
    assert estimate_tokens(0, 10) == 10
    assert estimate_tokens(9, 10) == 13  # 9 chars round up to 3 tokens


def test_bucket_refills_at_its_rate_and_may_run_into_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock)  # 10 a second, holds 1 s worth
    assert bucket.capacity == pytest.approx(10)
    assert bucket.wait_time(10) == 0
    bucket.take(25)  # bigger than the bucket: allowed once, leaves a debt of 15
    assert bucket.level == pytest.approx(-15)
    assert bucket.wait_time(1) == pytest.approx(1.6)
    clock.now += 1.6
    assert bucket.level == pytest.approx(1)
    clock.now += 100
    assert bucket.level == pytest.approx(10)  # never above capacity
    bucket.give_back(5)
    assert bucket.level == pytest.approx(10)


def test_requests_per_minute_spaces_requests_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, clock=clock, sleep=clock.sleep)

    async def ten() -> None:
        for _ in range(10):
            await limiter.acquire()

    run(ten())
    # One request a second: the first goes at once, each next one waits a second.
    assert clock.now - 100.0 == pytest.approx(9.0)
    assert limiter.waited_s == pytest.approx(9.0)


def test_tokens_per_minute_waits_for_big_requests_and_is_corrected_by_usage() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=6000, clock=clock, sleep=clock.sleep)  # 100/s

    async def go() -> None:
        await limiter.acquire(100)  # a full bucket: no wait
        assert clock.now == 100.0
        limiter.correct(estimated=100, actual=40)  # the answer was short: 60 come back
        await limiter.acquire(60)
        assert clock.now == 100.0  # ... so the next 60 need no wait either
        await limiter.acquire(300)  # bigger than the bucket: waits for a full bucket
        assert clock.now == pytest.approx(101.0)
        await limiter.acquire(100)  # and its debt of 200 is paid before anything else goes
        assert clock.now == pytest.approx(104.0)

    run(go())


def test_concurrent_callers_share_the_limit_first_come_first_served() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=120, clock=clock, sleep=clock.sleep)  # 2/s
    order: list[int] = []

    async def caller(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    async def go() -> None:
        await asyncio.gather(*(caller(i) for i in range(5)))

    run(go())
    assert order == [0, 1, 2, 3, 4]
    assert clock.now - 100.0 == pytest.approx(1.5)  # 2/s holding 2: 2 at once, 3 more at 0.5 s


def test_no_limits_never_wait() -> None:
    limiter = RateLimiter()
    assert not limiter.active and run(limiter.acquire(10**9)) == 0.0


@pytest.fixture
def teacher(tmp_path: Path) -> Iterator[str]:
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "reference": f"a{i}"}) + "\n" for i in range(8)))
    with start_demo_teacher(data, error_rate=0.0) as url:
        yield url


def test_client_respects_requests_per_minute_against_a_real_server(teacher: str) -> None:
    from engine.specs import TeacherSpec

    spec = TeacherSpec(kind="demo", concurrency=8, requests_per_minute=600)  # 10/s, 1 s burst
    client = ChatClient(spec, None, base_url_override=teacher)
    results = client.complete_many([[{"role": "user", "content": f"q{i}"}] for i in range(15)])
    assert all(r.ok for r in results)
    # 15 requests at 10/s with 10 up front: some had to wait, and the waits were counted (how
    # long is the fake-clock tests' business; wall time on a busy machine proves nothing).
    assert client.throttled_s > 0
    assert client.stats["http_requests"] == 15
