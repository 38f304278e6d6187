"""Builders of the `scheduler_pb2.Command` entries that change the job table.

Every write goes through Raft as one of these; building them in one place keeps the
field conventions (presence of optional fields, 0 = none) in one place too.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobsched._proto import scheduler_pb2
from jobsched.jobs.model import JobResult


def submit_job(
    job_id: str,
    command: str,
    created_at_ms: int,
    image: str = "",
    timeout_seconds: int = 0,
    idempotency_key: str = "",
    max_attempts: int = 0,
) -> scheduler_pb2.Command:
    """A SubmitJob entry; `image` is set (has presence) only when non-empty."""
    submit = scheduler_pb2.SubmitJobCommand(
        job_id=job_id,
        command=command,
        created_at_ms=created_at_ms,
        timeout_seconds=timeout_seconds,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
    )
    if image:
        submit.image = image
    return scheduler_pb2.Command(submit_job=submit)


def assign_job(
    job_id: str, worker_id: int, attempt: int, worker_incarnation: int = 0
) -> scheduler_pb2.Command:
    """An AssignJob entry: attempt number `attempt` of `job_id` runs on `worker_id`
    (in the process life `worker_incarnation` of that worker)."""
    return scheduler_pb2.Command(
        assign_job=scheduler_pb2.AssignJobCommand(
            job_id=job_id,
            worker_id=worker_id,
            attempt=attempt,
            worker_incarnation=worker_incarnation,
        )
    )


def requeue_job(job_id: str, attempt: int, error: str, failed_at_ms: int) -> scheduler_pb2.Command:
    """A RequeueJob entry for a running attempt whose worker was lost."""
    return scheduler_pb2.Command(
        requeue_job=scheduler_pb2.RequeueJobCommand(
            job_id=job_id, attempt=attempt, error=error, failed_at_ms=failed_at_ms
        )
    )


def status_update(
    job_id: str, result: JobResult, executed_by: int, attempt: int
) -> scheduler_pb2.UpdateJobStatusCommand:
    """The finished attempt as an UpdateJobStatusCommand message.

    This is also what a follower's worker sends in ForwardJobStatusRequest.updates.
    exit_code and started_at_ms are set only when known.
    """
    update = scheduler_pb2.UpdateJobStatusCommand(
        job_id=job_id,
        status=int(result.status),
        executed_by=executed_by,
        completed_at_ms=result.completed_at_ms,
        output=result.output,
        error=result.error,
        output_truncated=result.output_truncated,
        attempt=attempt,
    )
    if result.exit_code is not None:
        update.exit_code = result.exit_code
    if result.started_at_ms is not None:
        update.started_at_ms = result.started_at_ms
    return update


def update_job_status(
    job_id: str, result: JobResult, executed_by: int, attempt: int
) -> scheduler_pb2.Command:
    """An UpdateJobStatus entry for one finished attempt."""
    return scheduler_pb2.Command(
        update_job_status=status_update(job_id, result, executed_by, attempt)
    )


def batch_update(
    updates: Iterable[scheduler_pb2.UpdateJobStatusCommand],
) -> scheduler_pb2.Command:
    """One BatchUpdateJobStatus entry carrying several results (e.g. one forward call).

    JobStatusUpdate has the same fields and numbers as UpdateJobStatusCommand, so each
    update is carried over by its wire bytes.
    """
    batch = scheduler_pb2.BatchUpdateJobStatusCommand()
    for update in updates:
        batch.updates.append(scheduler_pb2.JobStatusUpdate.FromString(update.SerializeToString()))
    return scheduler_pb2.Command(batch_update_job_status=batch)


def cancel_job(job_id: str, cancelled_at_ms: int) -> scheduler_pb2.Command:
    """A CancelJob entry; the time travels in the entry so every node records the same."""
    return scheduler_pb2.Command(
        cancel_job=scheduler_pb2.CancelJobCommand(job_id=job_id, cancelled_at_ms=cancelled_at_ms)
    )


def register_worker(worker_id: int) -> scheduler_pb2.Command:
    """A RegisterWorker entry (the first heartbeat of a worker)."""
    return scheduler_pb2.Command(
        register_worker=scheduler_pb2.RegisterWorkerCommand(worker_id=worker_id)
    )
