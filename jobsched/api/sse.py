"""One server-sent-events connection: frames, flow control and the bounds on a reader.

The stream writes frames as they come while the connection takes them. When the
socket's buffer fills, Twisted pauses the stream (IPushProducer) and frames wait in a
bounded queue; a reader that lets the queue overflow, or stays paused too long, is cut
off (it reconnects with `Last-Event-ID`, or reloads).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

MAX_QUEUED_FRAMES = 1000
MAX_QUEUED_BYTES = 8 * 1024 * 1024
MAX_PAUSED_SECONDS = 60.0
KEEPALIVE = b": keepalive\n\n"


def frame(kind: str, data: object, event_id: int | str | None = None) -> bytes:
    """One SSE event: `id` (when given), `event` and a one-line JSON `data`."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {kind}\ndata: {body}\n\n".encode()


@implementer(IPushProducer)
class EventStream:
    """Writes SSE frames to one open request; `done` fires when the stream ends.

    Cancelling `done` (Klein does when the client goes away) closes the stream.
    """

    def __init__(
        self,
        request,
        clock: IReactorTime,
        on_close: Callable[[EventStream], None],
        max_frames: int = MAX_QUEUED_FRAMES,
        max_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._request = request
        self._clock = clock
        self._on_close = on_close
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self.paused_since: float | None = None
        self.closed = False
        self.done = defer.Deferred(lambda _: self._cleanup())

    def open(self, greeting: bytes = b"retry: 2000\n\n") -> None:
        """Take the request's connection as a producer, notice when it closes, and send
        the first bytes."""
        self._request.registerProducer(self, True)
        self._request.notifyFinish().addBoth(lambda _: self._cleanup())
        self._request.write(greeting)

    def send(self, data: bytes) -> None:
        """Write `data` now, or queue it while paused; cut the reader off on overflow."""
        if self.closed:
            return
        if self.paused_since is None:
            self._request.write(data)
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if len(self._queue) > self._max_frames or self._queued_bytes > self._max_bytes:
            self.drop()

    def stalled(self, max_paused_seconds: float = MAX_PAUSED_SECONDS) -> bool:
        """Whether the reader has taken nothing for longer than allowed."""
        return (
            self.paused_since is not None
            and self._clock.seconds() - self.paused_since > max_paused_seconds
        )

    def drop(self) -> None:
        """Cut off a reader that does not keep up: close the connection at once."""
        if not self.closed:
            self._request.loseConnection()
            self.close()

    def close(self) -> None:
        """End the stream from this side (idempotent): `done` fires and the response
        ends."""
        if self._cleanup():
            self.done.callback(b"")

    def _cleanup(self) -> bool:
        """Forget the queue, release the connection, tell the hub; False if done before."""
        if self.closed:
            return False
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        if getattr(self._request, "producer", None) is self:
            self._request.unregisterProducer()
        self._on_close(self)
        return True

    # ------------------------------------------------------------------ IPushProducer

    def pauseProducing(self) -> None:
        if self.paused_since is None:
            self.paused_since = self._clock.seconds()

    def resumeProducing(self) -> None:
        self.paused_since = None
        if self._queue and not self.closed:
            data = b"".join(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            self._request.write(data)

    def stopProducing(self) -> None:
        """The connection is going away (Klein cancels `done` as it goes)."""
        self._cleanup()
