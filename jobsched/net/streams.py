"""Bounds on a node's server streams (API.md §2.6, docs/api.md "Streams").

An open stream holds no thread, but it holds memory and a place in the reactor's
queue when it fetches its next page, so a node bounds both how many streams are open
at once and how long one may wait on a reader that does not read. Used only on the
gRPC server's event loop thread (so plain counters suffice; other threads only read
them, for /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from jobsched.errors import StreamStalled, TooManyStreams

MAX_OPEN_STREAMS = 1000
STREAM_STALL_SECONDS = 30.0
CONCURRENT_PAGE_FETCHES = 4
"""Streams fetching their next page from the reactor at once (the others wait here,
not in the reactor's queue, so a crowd of streams cannot hold up Raft)."""


class StreamLimits:
    """Admits streams up to `max_open` and drops a stream whose write could not
    proceed for `stall_seconds`; counts what it did."""

    def __init__(
        self, max_open: int = MAX_OPEN_STREAMS, stall_seconds: float = STREAM_STALL_SECONDS
    ) -> None:
        self.max_open = max_open
        self.stall_seconds = stall_seconds
        self.open = 0
        self.writes_waiting = 0
        self.refused = 0
        self.dropped = 0
        self._page_fetches: asyncio.Semaphore | None = None

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the open-stream places for the life of a stream, or raise
        TooManyStreams at once."""
        if self.open >= self.max_open:
            self.refused += 1
            raise TooManyStreams()
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1

    def page_fetch(self) -> asyncio.Semaphore:
        """The semaphore a stream holds while its next page is fetched (made on the
        loop that first asks for it)."""
        if self._page_fetches is None:
            self._page_fetches = asyncio.Semaphore(CONCURRENT_PAGE_FETCHES)
        return self._page_fetches

    async def write(self, context, message) -> None:
        """Send one message; StreamStalled if it could not go within the bound."""
        self.writes_waiting += 1
        try:
            async with asyncio.timeout(self.stall_seconds):
                await context.write(message)
        except TimeoutError:
            self.dropped += 1
            raise StreamStalled.after(self.stall_seconds) from None
        finally:
            self.writes_waiting -= 1
