"""Reading a job's output from what this node holds (API.md §4 "Live output").

A finished job's output is in the replicated table on every node; a running job's is
in the live buffer of the node running it. `LocalOutputReader.read` answers from
these and, when there is nothing new yet, waits for the job's next change. Whether a
read is answered here or by the node running the job is the router's decision.
"""

from __future__ import annotations

from twisted.internet import defer

from jobsched.interfaces import IJobTable
from jobsched.jobs.model import Job, JobStatus
from jobsched.worker.live_output import (
    MAX_PIECE_BYTES,
    STDERR,
    STDOUT,
    LiveOutputs,
    OutputCursor,
    OutputPiece,
    OutputRead,
)


class LocalOutputReader:
    """Reads jobs' output from this node's table and live buffers."""

    def __init__(self, node_id: int, table: IJobTable, live: LiveOutputs) -> None:
        self._node_id = node_id
        self._table = table
        self._live = live

    def runs_here(self, job: Job) -> bool:
        return job.status is JobStatus.RUNNING and job.assigned_worker == self._node_id

    @defer.inlineCallbacks
    def read(self, job_id: str, cursor: OutputCursor, wait: float):
        """Deferred[OutputRead]: what follows `cursor`; when nothing does yet, what
        follows it after the job's next change (or `wait` seconds, then maybe nothing)."""
        read = self.read_now(job_id, cursor)
        if read.pieces or read.final or wait <= 0:
            return read
        yield self._live.next_change(job_id, wait)
        return self.read_now(job_id, read.cursor)

    def read_now(self, job_id: str, cursor: OutputCursor) -> OutputRead:
        """What follows `cursor` now, without waiting."""
        job = self._table.get(job_id)
        if job is None:  # gone with a snapshot that no longer holds it
            return OutputRead((), cursor, JobStatus.PENDING)
        if job.status.is_terminal:
            return finished_output(job, cursor)
        live = self._live.get(job_id)
        if self.runs_here(job) and live is not None and live.attempt == job.attempts:
            pieces, cursor = live.read(cursor.in_attempt(live.attempt))
            return OutputRead(pieces, cursor, job.status)
        return OutputRead((), cursor, job.status)


def finished_output(job: Job, cursor: OutputCursor) -> OutputRead:
    """A finished job's stored output after `cursor`, and the end. A reader that saw
    the whole live output of the last attempt gets only the end (the stored copy of a
    killed attempt's stderr is the reason it was killed, not what it wrote)."""
    cursor = cursor.in_attempt(job.attempts)
    pieces: list[OutputPiece] = []
    if not cursor.live_done:
        for stream, text in ((STDOUT, job.output), (STDERR, job.error)):
            data = text.encode("utf-8")
            offset = cursor.offset(stream)
            while offset < len(data):
                piece = data[offset : offset + MAX_PIECE_BYTES]
                pieces.append(OutputPiece(stream, piece, offset, 0, job.attempts))
                offset += len(piece)
            cursor = cursor.moved(stream, max(offset, cursor.offset(stream)))
    return OutputRead(tuple(pieces), cursor, job.status, job.exit_code, final=True)
