"""A running job's output as it is produced, for readers that follow it (API.md §4).

Each attempt running on this node has a `LiveOutput`: per stream, the last
`--max-output-bytes` bytes the job wrote and the offset of the first one kept. Readers
keep their own place (an `OutputCursor`) and ask for what follows it, so many readers
share one buffer and none of them is a queue: a reader that falls behind the kept tail
gets what is left and a count of the bytes it missed (`skipped`). Everything here runs
on the reactor thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from jobsched.jobs.model import Job, JobStatus

STDOUT = "stdout"
STDERR = "stderr"
STREAMS = (STDOUT, STDERR)
MAX_PIECE_BYTES = 32 * 1024
"""The most data one piece (one JobOutputChunk) carries."""


@dataclass(frozen=True)
class OutputCursor:
    """Where a reader is: byte offsets in each stream of one attempt (`attempt` 0: the
    offsets count in whichever attempt is current), and whether it has seen the end of
    that attempt's live output."""

    attempt: int = 0
    stdout: int = 0
    stderr: int = 0
    live_done: bool = False

    def offset(self, stream: str) -> int:
        return self.stdout if stream == STDOUT else self.stderr

    def moved(self, stream: str, offset: int) -> OutputCursor:
        return dataclasses.replace(self, **{stream: offset})

    def in_attempt(self, attempt: int) -> OutputCursor:
        """This cursor for `attempt`: unchanged when it counts in that attempt (or in
        the current one, `attempt` 0), else at the start of it."""
        if self.attempt in (0, attempt):
            return dataclasses.replace(self, attempt=attempt)
        return OutputCursor(attempt=attempt)


@dataclass(frozen=True)
class OutputPiece:
    """`data` of `stream` from `offset`; the `skipped` bytes before it were lost."""

    stream: str
    data: bytes
    offset: int
    skipped: int = 0
    attempt: int = 0


@dataclass(frozen=True)
class OutputRead:
    """One read: the pieces, where the reader is now, the job's status and exit code
    as this node sees them, and `final` once the job is over and all was read."""

    pieces: tuple[OutputPiece, ...]
    cursor: OutputCursor
    status: JobStatus
    exit_code: int | None = None
    final: bool = False


class _Tail:
    """The last `cap` bytes written to one stream, and the offset of the first kept."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._data = bytearray()
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + len(self._data)

    def write(self, data: bytes) -> None:
        self._data += data
        excess = len(self._data) - self._cap
        if excess > 0:
            del self._data[:excess]
            self.start += excess

    def read(self, offset: int, limit: int) -> tuple[int, int, bytes]:
        """(skipped, offset of the data, data): up to `limit` bytes from `offset`."""
        skipped = max(0, self.start - offset)
        begin = max(offset, self.start)
        data = bytes(self._data[begin - self.start : begin - self.start + limit])
        return skipped, begin, data


class LiveOutput:
    """One attempt's output while it runs: the executor writes, readers read."""

    def __init__(self, job_id: str, attempt: int, cap: int, notify: Callable[[str], None]):
        self.job_id = job_id
        self.attempt = attempt
        self._tails = {stream: _Tail(cap) for stream in STREAMS}
        self._notify = notify
        self.closed = False

    def write(self, stream: str, data: bytes) -> None:
        """Bytes the job wrote to `stream` (ignored once the run has ended)."""
        if self.closed or not data:
            return
        self._tails[stream].write(data)
        self._notify(self.job_id)

    def close(self) -> None:
        """The run has ended: nothing more will be written."""
        if not self.closed:
            self.closed = True
            self._notify(self.job_id)

    def end(self, stream: str) -> int:
        """How many bytes the job has written to `stream` so far."""
        return self._tails[stream].end

    def read(
        self, cursor: OutputCursor, limit: int = MAX_PIECE_BYTES
    ) -> tuple[tuple[OutputPiece, ...], OutputCursor]:
        """Everything after `cursor` (a cursor of this attempt), in pieces of at most
        `limit` bytes; the cursor past it, `live_done` once the run has ended."""
        pieces = []
        for stream in STREAMS:
            tail = self._tails[stream]
            offset = cursor.offset(stream)
            while offset < tail.end:
                skipped, begin, data = tail.read(offset, limit)
                pieces.append(OutputPiece(stream, data, begin, skipped, self.attempt))
                offset = begin + len(data)
            cursor = cursor.moved(stream, offset)
        if self.closed:
            cursor = dataclasses.replace(cursor, live_done=True)
        return tuple(pieces), cursor


class LiveOutputs:
    """The live output of the attempts running on this node, and a way to wait for the
    next change of a job (new output, its run ending, or a change in the job table)."""

    def __init__(self, clock: IReactorTime, cap: int = 65536) -> None:
        self._clock = clock
        self._cap = cap
        self._outputs: dict[str, LiveOutput] = {}
        self._waiters: dict[str, list[defer.Deferred]] = {}

    def open(self, job_id: str, attempt: int) -> LiveOutput:
        """A new buffer for an attempt starting here (replacing an older one)."""
        output = LiveOutput(job_id, attempt, self._cap, self._changed)
        self._outputs[job_id] = output
        self._changed(job_id)
        return output

    def get(self, job_id: str) -> LiveOutput | None:
        return self._outputs.get(job_id)

    def __len__(self) -> int:
        return len(self._outputs)

    def job_changed(self, event: str, job: Job | None) -> None:
        """Job table listener: forget a buffer once its job is over or has moved on to
        another attempt, and wake whoever waits on the job."""
        if job is None:  # a snapshot replaced the table
            for job_id in [j for j, output in self._outputs.items() if output.closed]:
                del self._outputs[job_id]
            for job_id in list(self._waiters):
                self._changed(job_id)
            return
        output = self._outputs.get(job.job_id)
        if output is not None and (
            job.status.is_terminal
            or job.status is JobStatus.PENDING
            or job.attempts != output.attempt
        ):
            del self._outputs[job.job_id]
        self._changed(job.job_id)

    def next_change(self, job_id: str, timeout: float) -> defer.Deferred:
        """Fires (with None) at the next change of `job_id`, or after `timeout` seconds;
        cancelling it stops the wait."""
        waiters = self._waiters.setdefault(job_id, [])
        timer = None

        def forget(_):
            if timer is not None and timer.active():
                timer.cancel()
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(job_id, None)

        waiter: defer.Deferred = defer.Deferred(forget)
        waiters.append(waiter)
        timer = self._clock.callLater(timeout, self._wake, waiter)
        waiter.addBoth(lambda result: (forget(None), result)[1])
        return waiter

    def waiting(self, job_id: str) -> int:
        """How many reads wait on `job_id` (for tests and metrics)."""
        return len(self._waiters.get(job_id, ()))

    @staticmethod
    def _wake(waiter: defer.Deferred) -> None:
        if not waiter.called:
            waiter.callback(None)

    def _changed(self, job_id: str) -> None:
        for waiter in list(self._waiters.get(job_id, ())):
            self._wake(waiter)
