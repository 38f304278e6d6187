"""A final job as an exit code (CLI.md, "Exit codes"): its own exit code when it has
one, 124 when it timed out, 125 when it was cancelled, 1 when it failed without a code.
"""

from __future__ import annotations

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli.failures import EXIT_CANCELLED, EXIT_FAILURE, EXIT_TIMED_OUT

FINAL_STATUSES = frozenset({pb.JOB_STATUS_COMPLETED, pb.JOB_STATUS_FAILED, pb.JOB_STATUS_CANCELLED})

TIMED_OUT = "timed_out"


def timed_out(job: pb.GetJobStatusResponse) -> bool:
    """Whether a failed job was killed for running past its timeout: the outcome of its
    last attempt in the replicated attempt history (never the error text)."""
    return (
        job.status == pb.JOB_STATUS_FAILED
        and len(job.attempt_history) > 0
        and job.attempt_history[-1].outcome == TIMED_OUT
    )


def exit_code_of(job: pb.GetJobStatusResponse) -> int:
    """The exit code `job wait` ends with for a final job."""
    if job.status == pb.JOB_STATUS_CANCELLED:
        return EXIT_CANCELLED
    if timed_out(job):
        return EXIT_TIMED_OUT
    if job.status == pb.JOB_STATUS_COMPLETED:
        return 0
    if job.HasField("exit_code") and 1 <= job.exit_code <= 255:
        return job.exit_code
    return EXIT_FAILURE


def exit_code_of_end(end) -> int:
    """The exit code for the end of a followed stream (an `OutputEnd`) whose job
    completed, was cancelled, or failed with a code of its own."""
    if end.status == "CANCELLED":
        return EXIT_CANCELLED
    if end.status == "COMPLETED":
        return 0
    if end.exit_code is not None and 1 <= end.exit_code <= 255:
        return end.exit_code
    return EXIT_FAILURE
