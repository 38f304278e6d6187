"""Bounds on a node's server streams (API.md §2.6, docs/api.md "Streams").

An open stream holds no thread, but it holds memory, a place in the reactor's queue
when it fetches its next page, and CPU for every message it sends (tens of µs each in
grpc.aio, on the loop that also carries Raft's RPCs). So a node bounds how many
streams are open at once, how long one may wait on a reader that does not read, and
how many messages all its streams together send per second. Used only on the gRPC
server's event loop thread (plain counters suffice; other threads only read them, for
/metrics).
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
STREAM_TURN_MESSAGES = 10
"""Messages a stream sends per turn (small, so a stream whose reader blocks it soon
does not hold a long reservation)."""
STREAM_MESSAGES_PER_SECOND = 1000
"""What all streams of a node send together at most. A message costs ≈ 70-140 µs of
the loop thread's CPU here, so this is about a tenth of a core; at 4000/s, 100
streams on each node of a busy 2-core machine caused elections."""


class StreamLimits:
    """Admits streams up to `max_open` and drops a stream whose write could not
    proceed for `stall_seconds`; counts what it did."""

    def __init__(
        self,
        max_open: int = MAX_OPEN_STREAMS,
        stall_seconds: float = STREAM_STALL_SECONDS,
        messages_per_second: float = STREAM_MESSAGES_PER_SECOND,
    ) -> None:
        self.max_open = max_open
        self.stall_seconds = stall_seconds
        self.messages_per_second = messages_per_second
        self._next_send = 0.0
        self.open = 0
        self.writes_waiting = 0
        self.refused = 0
        self.dropped = 0
        self.sent = 0
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

    async def pace(self, count: int) -> None:
        """Wait for this stream's turn to send `count` messages. Turns are handed out
        in virtual time: each caller reserves the next `count / rate` seconds, so
        waiting streams take turns in order and none wakes only to wait again."""
        now = asyncio.get_running_loop().time()
        start = max(self._next_send, now)
        self._next_send = start + count / self.messages_per_second
        if start > now:
            await asyncio.sleep(start - now)

    async def write(self, context, message) -> None:
        """Send one message; StreamStalled if it could not go within the bound."""
        self.writes_waiting += 1
        try:
            async with asyncio.timeout(self.stall_seconds):
                await context.write(message)
            self.sent += 1
        except TimeoutError:
            self.dropped += 1
            raise StreamStalled.after(self.stall_seconds) from None
        finally:
            self.writes_waiting -= 1
