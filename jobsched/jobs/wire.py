"""Jobs as gRPC response messages.

Optional wire fields (exit_code, started_at_ms, completed_at_ms) are set only when the
job knows them, so clients can tell "no exit code" from "exit code 0".
"""

from __future__ import annotations

from jobsched._proto import scheduler_pb2
from jobsched.jobs.model import AttemptRecord, Job


def job_to_job_info(job: Job) -> scheduler_pb2.JobInfo:
    """The ListJobs / StreamJobs row of a job (no output)."""
    info = scheduler_pb2.JobInfo(
        job_id=job.job_id,
        command=job.command,
        status=int(job.status),
        assigned_worker=job.assigned_worker,
        created_at_ms=job.created_at_ms,
        image=job.image,
        executed_by=job.executed_by,
    )
    if job.completed_at_ms is not None:
        info.completed_at_ms = job.completed_at_ms
    if job.exit_code is not None:
        info.exit_code = job.exit_code
    return info


def job_to_status_response(job: Job) -> scheduler_pb2.GetJobStatusResponse:
    """The full GetJobStatus answer of a job, output included."""
    response = scheduler_pb2.GetJobStatusResponse(
        job_id=job.job_id,
        status=int(job.status),
        output=job.output,
        error=job.error,
        assigned_worker=job.assigned_worker,
        executed_by=job.executed_by,
        created_at_ms=job.created_at_ms,
        command=job.command,
        image=job.image,
        timeout_seconds=job.timeout_seconds,
        attempts=job.attempts,
        output_truncated=job.output_truncated,
    )
    if job.exit_code is not None:
        response.exit_code = job.exit_code
    if job.completed_at_ms is not None:
        response.completed_at_ms = job.completed_at_ms
    if job.started_at_ms is not None:
        response.started_at_ms = job.started_at_ms
    response.attempt_history.extend(_attempt_message(a) for a in job.attempt_history)
    return response


def _attempt_message(record: AttemptRecord) -> scheduler_pb2.AttemptRecord:
    """An attempt on the wire: outcome empty while it runs, times set when known."""
    message = scheduler_pb2.AttemptRecord(
        attempt=record.attempt,
        worker=record.worker,
        outcome=record.outcome or "",
        late=record.late,
    )
    if record.started_at_ms is not None:
        message.started_at_ms = record.started_at_ms
    if record.finished_at_ms is not None:
        message.finished_at_ms = record.finished_at_ms
    return message


def job_info_bytes(job: Job) -> bytes:
    """A job's JobInfo, serialized (what a ListJobs answer repeats for each job)."""
    return job_to_job_info(job).SerializeToString()


def list_jobs_response_bytes(items: list[bytes], next_page_token: str, total_count: int) -> bytes:
    """A serialized ListJobsResponse made of serialized JobInfos, byte for byte what
    protobuf writes for the same message (fields in number order, defaults left out)."""
    parts = []
    for item in items:
        parts += (b"\x0a", _varint(len(item)), item)  # 1: jobs (length-delimited)
    if next_page_token:
        token = next_page_token.encode("utf-8")
        parts += (b"\x12", _varint(len(token)), token)  # 2: next_page_token
    if total_count:
        parts += (b"\x18", _varint(total_count))  # 3: total_count (varint)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
