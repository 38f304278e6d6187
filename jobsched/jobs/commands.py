"""Builders of the Raft entries that change the job table: serialized
`scheduler_pb2.Command` messages, the opaque bytes Raft replicates.

Every write goes through Raft as one of these; building them in one place keeps the
field conventions (presence of optional fields, 0 = none) in one place too.
"""

from __future__ import annotations

from collections.abc import Iterable

from jobsched._proto import scheduler_pb2
from jobsched.jobs.model import JobResult

# The newest entry forms this version writes and applies. 1: one job or one assignment
# per entry, results in batches; 2: SubmitJobs and AssignJobs entries, and assignments
# carried in submit and result entries. A node of an older version would skip what it
# does not know, and its table would part from the others': the cluster writes forms
# above 1 only from an EntryForms entry on, which the leader proposes once every node
# has said (in its heartbeats) that it applies them.
ENTRY_FORMS = 2
BATCHED_FORMS = 2


def job_to_submit(
    job_id: str,
    command: str,
    created_at_ms: int,
    image: str = "",
    timeout_seconds: int = 0,
    idempotency_key: str = "",
    max_attempts: int = 0,
) -> scheduler_pb2.SubmitJobCommand:
    """One job as a SubmitJobCommand; `image` is set (has presence) only when non-empty."""
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
    return submit


def submit_job(job_id: str, command: str, created_at_ms: int, **options) -> bytes:
    """A SubmitJob entry; `options` as `job_to_submit` takes them."""
    return entry(submit_job=job_to_submit(job_id, command, created_at_ms, **options))


def submit_jobs(jobs: Iterable[scheduler_pb2.SubmitJobCommand]) -> bytes:
    """One SubmitJobs entry carrying several jobs (built with `job_to_submit`), applied
    in order."""
    return entry(submit_jobs=scheduler_pb2.SubmitJobsCommand(jobs=jobs))


def assignment(
    job_id: str,
    worker_id: int,
    attempt: int,
    worker_incarnation: int = 0,
    assigned_at_ms: int = 0,
) -> scheduler_pb2.AssignJobCommand:
    """Attempt number `attempt` of `job_id` runs on `worker_id` (in the process life
    `worker_incarnation` of that worker) from `assigned_at_ms`."""
    return scheduler_pb2.AssignJobCommand(
        job_id=job_id,
        worker_id=worker_id,
        attempt=attempt,
        worker_incarnation=worker_incarnation,
        assigned_at_ms=assigned_at_ms,
    )


def assign_job(
    job_id: str,
    worker_id: int,
    attempt: int,
    worker_incarnation: int = 0,
    assigned_at_ms: int = 0,
) -> bytes:
    """An AssignJob entry (see `assignment`)."""
    return entry(
        assign_job=assignment(job_id, worker_id, attempt, worker_incarnation, assigned_at_ms)
    )


def assign_jobs(assignments: Iterable[scheduler_pb2.AssignJobCommand]) -> bytes:
    """One AssignJobs entry: a planning round's assignments, applied in order."""
    return entry(assign_jobs=scheduler_pb2.AssignJobsCommand(assignments=assignments))


def requeue_job(job_id: str, attempt: int, error: str, failed_at_ms: int) -> bytes:
    """A RequeueJob entry for a running attempt whose worker was lost."""
    return entry(
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
        timed_out=result.timed_out,
    )
    if result.exit_code is not None:
        update.exit_code = result.exit_code
    if result.started_at_ms is not None:
        update.started_at_ms = result.started_at_ms
    return update


def batch_update(
    updates: Iterable[scheduler_pb2.UpdateJobStatusCommand],
    assignments: Iterable[scheduler_pb2.AssignJobCommand] = (),
) -> bytes:
    """One BatchUpdateJobStatus entry carrying several results (e.g. one forward call),
    and the assignments of the slots they free, applied after them.

    JobStatusUpdate has the same fields and numbers as UpdateJobStatusCommand, so each
    update is carried over by its wire bytes.
    """
    batch = scheduler_pb2.BatchUpdateJobStatusCommand(assignments=assignments)
    for update in updates:
        batch.updates.append(scheduler_pb2.JobStatusUpdate.FromString(update.SerializeToString()))
    return entry(batch_update_job_status=batch)


def cancel_job(job_id: str, cancelled_at_ms: int) -> bytes:
    """A CancelJob entry; the time travels in the entry so every node records the same."""
    return entry(
        cancel_job=scheduler_pb2.CancelJobCommand(job_id=job_id, cancelled_at_ms=cancelled_at_ms)
    )


def entry_forms(forms: int) -> bytes:
    """An EntryForms entry: the cluster writes entries of `forms` from here on."""
    return entry(entry_forms=scheduler_pb2.EntryFormsCommand(forms=forms))


def register_worker(worker_id: int) -> bytes:
    """A RegisterWorker entry (the first heartbeat of a worker)."""
    return entry(register_worker=scheduler_pb2.RegisterWorkerCommand(worker_id=worker_id))


def entry(**command) -> bytes:
    """A Command entry with the one field given (e.g. `entry(submit_job=...)`)."""
    return scheduler_pb2.Command(**command).SerializeToString()
