"""Client-side rate limits: requests and tokens per minute, as async token buckets.

Hosted endpoints enforce per-minute quotas and answer 429 beyond them; retrying those costs
time and, under a tight quota, can starve a batch. A :class:`RateLimiter` keeps a job under
the quota instead: each HTTP attempt first takes one request and an *estimate* of its tokens
(prompt length plus ``max_tokens``) from the buckets, waiting when they are empty; when the
answer arrives, the estimate is corrected by the usage the endpoint reports.

Buckets hold one second's worth of their rate, so requests are spread over the minute (the
way providers enforce per-minute limits at finer granularity) rather than sent as one burst.
A request bigger than the bucket may still go once the bucket is full; the bucket then runs
into debt that later requests wait out, so the long-run rate is always respected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

BURST_SECONDS = 1.0
"""A bucket holds this many seconds' worth of its per-minute rate."""
CHARS_PER_TOKEN = 4
"""Rough characters per token for estimates (corrected by the reported usage afterwards)."""


def estimate_tokens(prompt_chars: int, max_tokens: int) -> int:
    """Tokens a request may use before the endpoint says: its prompt plus the answer limit.

    Args:
        prompt_chars: characters of all message contents.
        max_tokens: the request's completion limit.
    """
    return -(-prompt_chars // CHARS_PER_TOKEN) + max_tokens


class TokenBucket:
    """A bucket refilled at ``per_minute / 60`` units a second, up to its capacity.

    The level may go negative (debt): see the module docstring.

    Args:
        per_minute: the sustained rate.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = self.rate * BURST_SECONDS
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()

    @property
    def level(self) -> float:
        """Units available now (negative while in debt)."""
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._level

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0 if now)."""
        need = min(amount, self.capacity)  # a big request waits for a full bucket, not forever
        return max(0.0, (need - self.level) / self.rate)

    def take(self, amount: float) -> None:
        """Take ``amount`` now (the level may go negative)."""
        self._level = self.level - amount

    def give_back(self, amount: float) -> None:
        """Return ``amount`` (negative: take more), e.g. when an estimate was too high."""
        self._level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits shared by all requests of a client.

    Args:
        requests_per_minute: cap on attempts per minute, or None for no cap.
        tokens_per_minute: cap on tokens per minute, or None for no cap.
        clock: monotonic seconds (injectable for tests).
        sleep: async sleep (injectable for tests).

    Attributes:
        waited_s: total seconds callers spent waiting for the buckets.
    """

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.requests = TokenBucket(requests_per_minute, clock) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, clock) if tokens_per_minute else None
        self._sleep = sleep
        self._lock: asyncio.Lock | None = None
        self.waited_s = 0.0

    @property
    def active(self) -> bool:
        """True when at least one limit is set."""
        return self.requests is not None or self.tokens is not None

    def _wait_time(self, tokens: int) -> float:
        waits = [0.0]
        if self.requests is not None:
            waits.append(self.requests.wait_time(1))
        if self.tokens is not None:
            waits.append(self.tokens.wait_time(tokens))
        return max(waits)

    async def acquire(self, tokens: int = 0) -> float:
        """Wait until one request and ``tokens`` tokens fit under the limits, then take them.

        Callers are served first come, first served (one lock), so a big request is not
        overtaken forever by small ones.

        Returns:
            Seconds this call waited.
        """
        if not self.active:
            return 0.0
        if self._lock is None:  # created lazily: it must belong to the running event loop
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            while (delay := self._wait_time(tokens)) > 0:
                await self._sleep(delay)
                waited += delay
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None:
                self.tokens.take(tokens)
        self.waited_s += waited
        return waited

    def correct(self, estimated: int, actual: int) -> None:
        """Replace a request's token estimate by its reported usage."""
        if self.tokens is not None and actual > 0:
            self.tokens.give_back(estimated - actual)
