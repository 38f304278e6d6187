"""GET /api/jobs/{id}/output: a job's output as server-sent events (API.md §4).

Events: `output` (`{"stream", "data", "offset"}`, plus `skipped` when bytes were lost
to this reader and `attempt`), and a last `end` (`{"status", "exit_code"}`). Each
`output` event's id is `<attempt>.<stdout offset>.<stderr offset>` after it, so a
client that reconnects with `Last-Event-ID` goes on where it was. Reads go through
the router (here, or the node running the job) on the reactor; a read happens only
while the connection takes what was sent, so a slow reader holds at most one read's
worth of frames and later gets `skipped` instead of a queue.
"""

from __future__ import annotations

import codecs

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from jobsched import errors
from jobsched.api.sse import KEEPALIVE, EventStream, frame
from jobsched.interfaces import IRouter
from jobsched.worker.live_output import OutputCursor, OutputPiece, OutputRead

MAX_OUTPUT_STREAMS = 64
FOLLOW_WAIT_SECONDS = 5.0
PAUSED_CHECK_SECONDS = 0.2


def cursor_of_event_id(raw: bytes | None) -> OutputCursor | None:
    """The cursor a `Last-Event-ID` of an output event names, or None."""
    if not raw:
        return None
    parts = raw.strip().split(b".")
    if len(parts) != 3 or not all(part.isdigit() and len(part) <= 19 for part in parts):
        return None
    attempt, stdout, stderr = (int(part) for part in parts)
    return OutputCursor(attempt, stdout, stderr)


class _Feed:
    """One client's output stream: reads while the client keeps up, frames, the end."""

    def __init__(self, router: IRouter, clock: IReactorTime, job_id: str, follow: bool):
        self._router = router
        self._clock = clock
        self._job_id = job_id
        self._follow = follow
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}
        self._attempt = -1
        self._pending: defer.Deferred | None = None

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()

    @defer.inlineCallbacks
    def run(self, stream: EventStream, cursor: OutputCursor):
        wait = FOLLOW_WAIT_SECONDS if self._follow else 0.0
        while not stream.closed:
            if stream.paused_since is not None:
                if stream.stalled():
                    stream.drop()
                    return
                yield self._hold(task.deferLater(self._clock, PAUSED_CHECK_SECONDS, lambda: None))
                continue
            try:
                read = yield self._hold(self._router.read_output(self._job_id, cursor, wait))
            except defer.CancelledError:
                return
            except errors.JobschedError as error:
                stream.send(frame("error", {"error": error.message, "code": error.code}))
                stream.close()
                return
            stream.send(b"".join(self._frames(cursor, read)) or KEEPALIVE)
            cursor = read.cursor
            if read.final or not (self._follow or read.pieces):
                stream.send(frame("end", _end(read)))
                stream.close()
                return

    def _hold(self, d: defer.Deferred) -> defer.Deferred:
        self._pending = d
        return d

    def _frames(self, before: OutputCursor, read: OutputRead):
        """An `output` frame per piece, its id the reader's place after it."""
        place = before.in_attempt(read.cursor.attempt)
        for piece in read.pieces:
            place = place.in_attempt(piece.attempt).moved(
                piece.stream, piece.offset + len(piece.data)
            )
            event_id = f"{place.attempt}.{place.stdout}.{place.stderr}"
            yield _output_frame(piece, self._text(piece), event_id)

    def _text(self, piece: OutputPiece) -> str:
        """The piece as text (invalid UTF-8 replaced; a character cut between two
        pieces is decoded whole, unless bytes were skipped between them)."""
        if piece.attempt != self._attempt:
            self._attempt = piece.attempt
            self._decoders.clear()
        decoder = self._decoders.get(piece.stream)
        if decoder is None or piece.skipped:
            decoder = self._decoders[piece.stream] = codecs.getincrementaldecoder("utf-8")(
                errors="replace"
            )
        return decoder.decode(piece.data)


def _output_frame(piece: OutputPiece, text: str, event_id: str) -> bytes:
    body: dict = {"stream": piece.stream, "data": text, "offset": piece.offset}
    if piece.skipped:
        body["skipped"] = piece.skipped
    body["attempt"] = piece.attempt
    return frame("output", body, event_id)


def _end(read: OutputRead) -> dict:
    return {"status": read.status.label, "exit_code": read.exit_code}


class OutputFeeds:
    """The open output streams of this node's REST API, at most `max_streams`."""

    def __init__(
        self, router: IRouter, clock: IReactorTime, max_streams: int = MAX_OUTPUT_STREAMS
    ) -> None:
        self._router = router
        self._clock = clock
        self._max_streams = max_streams
        self._feeds: dict[EventStream, _Feed] = {}

    @property
    def stream_count(self) -> int:
        return len(self._feeds)

    def open(self, request, job_id: str, follow: bool, cursor: OutputCursor) -> defer.Deferred:
        """Stream `job_id`'s output on `request` (headers already set); returns the
        stream's `done`. Raises Overloaded when too many are open."""
        if len(self._feeds) >= self._max_streams:
            raise errors.Overloaded("too many output streams; retry later")
        feed = _Feed(self._router, self._clock, job_id, follow)
        stream = EventStream(request, self._clock, self._closed)
        self._feeds[stream] = feed
        stream.open()
        feed.run(stream, cursor)
        return stream.done

    def _closed(self, stream: EventStream) -> None:
        feed = self._feeds.pop(stream, None)
        if feed is not None:
            feed.stop()
