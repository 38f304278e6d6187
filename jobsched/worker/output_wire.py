"""Live output on the wire: cursors, pieces and reads as gRPC messages and back."""

from __future__ import annotations

from jobsched._proto import scheduler_pb2 as pb
from jobsched.jobs.model import JobStatus
from jobsched.worker.live_output import OutputCursor, OutputPiece, OutputRead


def cursor_of_request(request: pb.StreamJobOutputRequest) -> OutputCursor:
    return OutputCursor(request.attempt, request.stdout_offset, request.stderr_offset)


def read_request(job_id: str, cursor: OutputCursor, wait: float) -> pb.ReadJobOutputRequest:
    return pb.ReadJobOutputRequest(
        job_id=job_id,
        attempt=cursor.attempt,
        stdout_offset=cursor.stdout,
        stderr_offset=cursor.stderr,
        live_done=cursor.live_done,
        wait_ms=int(wait * 1000),
    )


def cursor_of_read_request(request: pb.ReadJobOutputRequest) -> OutputCursor:
    return OutputCursor(
        request.attempt, request.stdout_offset, request.stderr_offset, request.live_done
    )


def piece_chunk(piece: OutputPiece) -> pb.JobOutputChunk:
    return pb.JobOutputChunk(
        stream=piece.stream,
        data=piece.data,
        offset=piece.offset,
        skipped=piece.skipped,
        attempt=piece.attempt,
    )


def final_chunk(read: OutputRead) -> pb.JobOutputChunk:
    """The last chunk of a stream: the job's status (and exit code) as last read."""
    chunk = pb.JobOutputChunk(final=True, status=int(read.status), attempt=read.cursor.attempt)
    if read.exit_code is not None:
        chunk.exit_code = read.exit_code
    return chunk


def read_response(read: OutputRead) -> pb.ReadJobOutputResponse:
    chunks = [piece_chunk(piece) for piece in read.pieces]
    if read.final:
        chunks.append(final_chunk(read))
    response = pb.ReadJobOutputResponse(
        chunks=chunks,
        attempt=read.cursor.attempt,
        stdout_offset=read.cursor.stdout,
        stderr_offset=read.cursor.stderr,
        live_done=read.cursor.live_done,
        status=int(read.status),
    )
    if read.exit_code is not None:
        response.exit_code = read.exit_code
    return response


def read_of_response(response: pb.ReadJobOutputResponse) -> OutputRead:
    pieces = tuple(
        OutputPiece(chunk.stream, chunk.data, chunk.offset, chunk.skipped, chunk.attempt)
        for chunk in response.chunks
        if not chunk.final
    )
    cursor = OutputCursor(
        response.attempt, response.stdout_offset, response.stderr_offset, response.live_done
    )
    return OutputRead(
        pieces,
        cursor,
        JobStatus(response.status) if response.status else JobStatus.PENDING,
        response.exit_code if response.HasField("exit_code") else None,
        final=any(chunk.final for chunk in response.chunks),
    )
