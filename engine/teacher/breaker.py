"""Stop asking an endpoint that is gone: a circuit breaker on connection failures.

Without it a dead endpoint is retried prompt by prompt: each request spends its
``max_retries`` attempts and backoff (0.5 + 1 + 2 + 4 + 8 s for 5 retries) before the next
one starts, so 128 prompts took minutes to fail while the page counted them as done.

The rule: the endpoint is **down** once at least :data:`DOWN_AFTER_ATTEMPTS` attempts in a row
failed to connect (connection refused or reset before a response, DNS failure, connect timeout)
and the first of them started at least :data:`DOWN_AFTER_S` seconds ago. Any HTTP response,
429 and 500 included, shows the endpoint is there and resets the count; a read timeout (the
server took the request but was slow) is not a connection failure. Both conditions matter:
at high concurrency a restart of a few seconds refuses dozens of attempts at once, which the
SDK's retries ride out; ten seconds in which nothing could connect at all is an endpoint that
is gone. With the default retries a dead endpoint is declared down about 10-16 s after it
died, and a blackholed one after its first connect timeout (``timeout_s``).

The chat client then cancels every request in flight and raises :class:`EndpointDownError`;
answers received before stay delivered (and cached, and saved by the teacher job).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2

DOWN_AFTER_ATTEMPTS = 8
"""Consecutive failed connection attempts before the endpoint can be declared down..."""
DOWN_AFTER_S = 10.0
"""...and how long ago the first of them must have started."""

_CONNECTION_FAILURES = (httpx2.ConnectError, httpx2.ConnectTimeout)


class EndpointDownError(RuntimeError):
    """The endpoint could not be reached for a while; the client stopped asking it."""


class EndpointBreaker:
    """Counts consecutive connection failures of one endpoint and trips by the module's rule.

    Args:
        endpoint: the endpoint as it may be shown (credentials already redacted).
        on_trip: called once, when the breaker trips (the client cancels its requests).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        endpoint: str,
        on_trip: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.on_trip = on_trip
        self._clock = clock
        self.failures = 0
        self.tripped = False
        self._first_started: float | None = None
        self.last_error = ""
        self.down_for_s = 0.0

    def started(self) -> float:
        """Mark the start of an attempt; returns its time (hand it to :meth:`failed`)."""
        return self._clock()

    def succeeded(self) -> None:
        """An HTTP response arrived (any status): the endpoint is there."""
        self.failures, self._first_started = 0, None

    def failed(self, started_at: float, error: BaseException) -> None:
        """An attempt started at ``started_at`` could not connect."""
        if self.tripped:
            return
        if self.failures == 0 or self._first_started is None:
            self._first_started = started_at
        self.failures += 1
        self.last_error = str(error) or type(error).__name__
        down_for = self._clock() - self._first_started
        if self.failures >= DOWN_AFTER_ATTEMPTS and down_for >= DOWN_AFTER_S:
            self.tripped = True
            self.down_for_s = down_for
            if self.on_trip is not None:
                self.on_trip()

    def message(self) -> str:
        """One line for the job's error: which endpoint, for how long, the last error."""
        return (
            f"teacher endpoint {self.endpoint} is unreachable: the last {self.failures} connection "
            f"attempts failed over {self.down_for_s:.0f} s (last error: {self.last_error}); "
            "stopped asking it"
        )


class WatchedTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that reports every attempt's outcome to an :class:`EndpointBreaker`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, breaker: EndpointBreaker) -> None:
        self._inner = inner
        self._breaker = breaker

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        started = self._breaker.started()
        try:
            response = await self._inner.handle_async_request(request)
        except _CONNECTION_FAILURES as err:
            self._breaker.failed(started, err)
            raise
        self._breaker.succeeded()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def watch(client: httpx2.AsyncClient, breaker: EndpointBreaker) -> None:
    """Route every transport of ``client`` (its own and any proxy's) through ``breaker``."""
    client._transport = WatchedTransport(client._transport, breaker)
    mounts = getattr(client, "_mounts", None)  # proxies from the environment (HTTPS_PROXY, ...)
    if isinstance(mounts, dict):
        for pattern, transport in list(mounts.items()):
            if isinstance(transport, httpx2.AsyncBaseTransport):
                mounts[pattern] = WatchedTransport(transport, breaker)
