"""The job record, its status, and what an executor is asked to run and reports back."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobStatus(enum.IntEnum):
    """Job states; the numbers are those of the wire enum `scheduler.JobStatus`."""

    PENDING = 1
    RUNNING = 2
    COMPLETED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

    @property
    def label(self) -> str:
        """Lower-case name used by REST (`pending`, `running`, ...)."""
        return self.name.lower()


class Outcome(enum.StrEnum):
    """How an attempt ended (API.md §4 attempt history); the value is the wire name."""

    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a job: where, from when to when, and how it ended (None while
    it runs). `late`: its result arrived after the attempt had been declared lost."""

    attempt: int
    worker: int
    started_at_ms: int | None
    finished_at_ms: int | None = None
    outcome: Outcome | None = None
    late: bool = False


@dataclass
class Job:
    """One row of the replicated job table."""

    job_id: str
    command: str
    created_at_ms: int
    image: str = ""
    timeout_seconds: int = 0
    max_attempts: int = 0
    idempotency_key: str = ""
    status: JobStatus = JobStatus.PENDING
    assigned_worker: int = 0
    worker_incarnation: int = 0
    executed_by: int = 0
    attempts: int = 0
    exit_code: int | None = None
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    output: str = ""
    error: str = ""
    output_truncated: bool = False
    # Oldest first; a tuple of frozen records, so copies of a job never share changes.
    attempt_history: tuple[AttemptRecord, ...] = ()

    def __copy__(self) -> Job:
        """A shallow copy (every field is immutable): about 4x faster than the
        generic copy.copy, which goes through __reduce_ex__."""
        copied = object.__new__(Job)
        copied.__dict__.update(self.__dict__)
        return copied


@dataclass(frozen=True)
class JobSpec:
    """What a worker hands an executor: everything needed to run one attempt."""

    job_id: str
    command: str
    image: str
    timeout_seconds: int
    attempt: int = 1


@dataclass(frozen=True)
class JobResult:
    """What an executor reports for one finished attempt.

    status is COMPLETED (exit 0) or FAILED (non-zero exit, timeout, start failure).
    exit_code is None when the command never produced one (timeout, missing image).
    timed_out is set when the executor killed the attempt at its timeout.
    """

    status: JobStatus
    exit_code: int | None
    output: str
    error: str
    output_truncated: bool
    started_at_ms: int | None
    completed_at_ms: int
    timed_out: bool = False
