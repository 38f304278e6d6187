"""The replicated job table: the state machine every node applies committed entries to.

`JobTable.apply` is the only way the table changes; it is deterministic (times travel in
the entries), so every node that applies the same log holds the same table. Queries are
pure reads for the reactor thread; they hand out copies, never the table's own records.

Jobs are kept in log order under a monotonically increasing sequence number. Sorted
sequence lists (all jobs, and one per status) make paging, FIFO order and counts cheap
on tables of tens of thousands of jobs.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import dataclasses
import functools
import hashlib
import json
import math
import operator
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger
from zope.interface import implementer

from jobsched._proto import scheduler_pb2
from jobsched.errors import InvalidArgument
from jobsched.interfaces import IJobTable, ISnapshotRestore
from jobsched.jobs.model import AttemptRecord, Job, JobStatus, Outcome
from jobsched.jobs.snapshot_build import SnapshotBuild, dumps
from jobsched.jobs.snapshot_reader import read_object

IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
SNAPSHOT_FORMAT = 2
"""2: each job a JSON array of its fields in the order the snapshot's `fields` names
(attempts likewise, `attempt_fields`); 1: each job a JSON object. Both are restored.
A table writes format 2 once its cluster writes entry forms 2 (a node of a version
that applies them reads format 2, which came before them), format 1, which every
version reads, until then: a node of an older version can install a newer node's
snapshot during a rolling upgrade."""
FORMS_FOR_SNAPSHOT_FORMAT = 2
"""The entry forms from which a cluster's snapshots are written in SNAPSHOT_FORMAT."""

Listener = Callable[[str, Job | None], None]

_JOB_FIELDS = tuple(field.name for field in dataclasses.fields(Job))
_RECORD_FIELDS = (*_JOB_FIELDS, "seq")
_ATTEMPT_FIELDS = tuple(field.name for field in dataclasses.fields(AttemptRecord))
# A job's and an attempt's values in field order, each in one call (snapshot records).
_job_values = operator.attrgetter(*_JOB_FIELDS)
_attempt_values = operator.attrgetter(*_ATTEMPT_FIELDS)
_STATUS_AT = _JOB_FIELDS.index("status")
_HISTORY_AT = _JOB_FIELDS.index("attempt_history")
_IMAGE_AT = _JOB_FIELDS.index("image")
_OUTCOME_AT = _ATTEMPT_FIELDS.index("outcome")
_STATUSES = {int(status): status for status in JobStatus}
_OUTCOMES = {str(outcome): outcome for outcome in Outcome}

_log = Logger()


@dataclass(frozen=True)
class ListQuery:
    """One ListJobs request: AND-combined filters plus the paging position."""

    page_size: int = 0
    page_token: str = ""
    status: JobStatus | None = None
    worker_id: int = 0
    command_substring: str = ""
    created_after_ms: int = 0
    created_before_ms: int = 0
    newest_first: bool = False

    def fingerprint(self) -> bytes:
        """8 bytes that differ (with high probability) between different filter sets
        (and orders: a token of one order is refused by the other)."""
        canonical = json.dumps(
            [
                int(self.status) if self.status is not None else 0,
                self.worker_id,
                self.command_substring.casefold(),
                self.created_after_ms,
                self.created_before_ms,
                *(["newest_first"] if self.newest_first else []),
            ]
        ).encode("utf-8")
        return hashlib.blake2b(canonical, digest_size=8, person=b"jobsched-filter").digest()


Renderer = Callable[[Job], bytes]


@dataclass(frozen=True)
class RenderedPage:
    """One page of ListJobs with each job already rendered (e.g. serialized)."""

    items: list[bytes]
    next_page_token: str
    total_count: int


@dataclass(frozen=True)
class JobPage:
    """One page of ListJobs: `total_count` is the size of the whole filtered set."""

    jobs: list[Job]
    next_page_token: str
    total_count: int


_TOKEN_BODY = struct.Struct(">BQ8s")  # format version, last sequence served, filters
_TOKEN_VERSION = 1
_CHECKSUM_SIZE = 8
_INVALID_TOKEN = "Invalid page token"


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECKSUM_SIZE, person=b"jobsched-page").digest()


def _encode_token(after_seq: int, fingerprint: bytes) -> str:
    body = _TOKEN_BODY.pack(_TOKEN_VERSION, after_seq, fingerprint)
    return base64.urlsafe_b64encode(body + _checksum(body)).rstrip(b"=").decode("ascii")


def _decode_token(token: str, fingerprint: bytes) -> int:
    """The sequence number a token continues after; InvalidArgument for anything a
    previous list call with the same filters could not have produced."""
    try:
        text = token.encode("ascii")
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise InvalidArgument(_INVALID_TOKEN) from None
    if len(raw) != _TOKEN_BODY.size + _CHECKSUM_SIZE or _encode_raw(raw) != token:
        raise InvalidArgument(_INVALID_TOKEN)
    body, checksum = raw[: _TOKEN_BODY.size], raw[_TOKEN_BODY.size :]
    version, after_seq, token_fingerprint = _TOKEN_BODY.unpack(body)
    if checksum != _checksum(body) or version != _TOKEN_VERSION or token_fingerprint != fingerprint:
        raise InvalidArgument(_INVALID_TOKEN)
    return after_seq


def _encode_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _clamp_page_size(page_size: int) -> int:
    if page_size <= 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def _slice_page(
    seqs: list[int], after: int | None, size: int, newest_first: bool
) -> tuple[list[int], bool]:
    """Up to `size` of the sorted `seqs` past the token position `after` (None: from
    the start), in the order asked for, and whether more follow."""
    if newest_first:
        end = len(seqs) if after is None else bisect.bisect_left(seqs, after)
        start = max(0, end - size)
        return seqs[start:end][::-1], start > 0
    start = 0 if after is None else bisect.bisect_right(seqs, after)
    return seqs[start : start + size], start + size < len(seqs)


def _matcher(query: ListQuery) -> Callable[[Job], bool] | None:
    """A predicate for the filters other than status (which the indexes answer), or
    None when there are none."""
    worker = query.worker_id
    needle = query.command_substring.casefold()
    after, before = query.created_after_ms, query.created_before_ms
    if not (worker or needle or after or before):
        return None

    def match(job: Job) -> bool:
        return (
            (not worker or job.assigned_worker == worker or job.executed_by == worker)
            and (not after or job.created_at_ms >= after)
            and (not before or job.created_at_ms <= before)
            and (not needle or needle in job.command.casefold())
        )

    return match


def _encoded_as_now(state: dict) -> bool:
    """Whether a snapshot's job records are what `JobTable._snapshot_record` makes now
    (same format and fields), so that they can seed the cache after a restore: else
    the first compaction after it would re-encode every job, a stall of about a
    second per 50,000 jobs on this machine."""
    return (
        state["format"] == SNAPSHOT_FORMAT
        and state["fields"] == list(_RECORD_FIELDS)
        and state["attempt_fields"] == list(_ATTEMPT_FIELDS)
    )


def _job_decoder(header: dict) -> Callable[[object], tuple[int, Job]]:
    """What makes a job's sequence number and the job of one record of a snapshot
    whose members other than the jobs are `header`, in either format."""
    if _encoded_as_now(header):
        return _job_from_values
    if header["format"] == 1:
        return _job_from_record
    return functools.partial(_job_from_named_values, header["fields"], header["attempt_fields"])


def _job_from_named_values(
    names: list[str], attempt_names: list[str], values: list
) -> tuple[int, Job]:
    """A format-2 record whose fields are not (all) those this version writes."""
    if len(values) != len(names):
        raise ValueError(f"a job record of {len(values)} fields, not {len(names)}")
    record = dict(zip(names, values, strict=True))
    record["attempt_history"] = [
        dict(zip(attempt_names, attempt, strict=True))
        for attempt in record.get("attempt_history", ())
    ]
    return _job_from_record(record)


def _job_from_record(record: dict) -> tuple[int, Job]:
    """A job's sequence number and the job from its fields by name (format 1)."""
    record = dict(record)
    seq = record.pop("seq")
    record["status"] = JobStatus(record["status"])
    record["image"] = sys.intern(record["image"])
    record["attempt_history"] = _history(record.get("attempt_history", ()))
    return seq, Job(**record)


def _job_from_values(values: list) -> tuple[int, Job]:
    """A job's sequence number and the job, from its record as `_snapshot_record`
    writes it now: restore's fast path, without a dict per job and per attempt (a
    follower installing a snapshot holds its reactor for the whole restore)."""
    if len(values) != len(_RECORD_FIELDS):
        raise ValueError(f"a job record of {len(values)} fields, not {len(_RECORD_FIELDS)}")
    *fields, seq = values
    status = _STATUSES.get(fields[_STATUS_AT])
    if status is None:
        raise ValueError(f"{fields[_STATUS_AT]!r} is not a job status")
    fields[_STATUS_AT] = status
    fields[_IMAGE_AT] = sys.intern(fields[_IMAGE_AT])
    fields[_HISTORY_AT] = tuple(_attempt_from_values(a) for a in fields[_HISTORY_AT])
    return seq, Job(*fields)


def _attempt_from_values(values: list) -> AttemptRecord:
    if len(values) != len(_ATTEMPT_FIELDS):
        raise ValueError(f"an attempt record of {len(values)} fields, not {len(_ATTEMPT_FIELDS)}")
    outcome = values[_OUTCOME_AT]
    if outcome is not None:
        values = list(values)  # the record itself seeds the snapshot cache: not changed
        values[_OUTCOME_AT] = _OUTCOMES[outcome]
    return AttemptRecord(*values)


def _history(records) -> tuple[AttemptRecord, ...]:
    """Attempt records from their snapshot form (dicts; outcome a name or null)."""
    history = []
    for fields in records:
        outcome = fields.pop("outcome")
        history.append(
            AttemptRecord(outcome=None if outcome is None else Outcome(outcome), **fields)
        )
    return tuple(history)


def _snapshot_record(snapshot_format: int, seq: int, job: Job) -> bytes:
    """The record of the job at `seq` in a snapshot of `snapshot_format`."""
    values = list(_job_values(job))
    values[_STATUS_AT] = int(job.status)
    attempts = [list(_attempt_values(a)) for a in job.attempt_history]
    if snapshot_format == 1:
        record = dict(zip(_JOB_FIELDS, values, strict=True))
        record["attempt_history"] = [dict(zip(_ATTEMPT_FIELDS, a, strict=True)) for a in attempts]
        record["seq"] = seq
        return dumps(record)
    values[_HISTORY_AT] = attempts
    values.append(seq)  # the record is the values of _RECORD_FIELDS, in order
    return dumps(values)


@implementer(IJobTable)
class JobTable:
    """The job table and worker registry, changed only by `apply`."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._jobs: dict[int, Job] = {}
        self._seq_of: dict[str, int] = {}
        self._order: list[int] = []
        self._by_status: dict[JobStatus, list[int]] = {status: [] for status in JobStatus}
        # idempotency key -> (job id, created_at_ms of that job), oldest first
        self._keys: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._workers: set[int] = set()
        self._entry_forms = 1  # the entry forms the cluster writes (jobs.commands)
        self._next_seq = 1
        # seq -> that job's snapshot record as UTF-8 JSON; dropped whenever the job
        # changes, so a snapshot re-encodes only the jobs changed since the last one.
        self._snapshot_records: dict[int, bytes] = {}
        self._records_format = SNAPSHOT_FORMAT  # the format of the cached records
        self._build: SnapshotBuild | None = None  # the snapshot begun, until complete
        # renderer key -> seq -> that job rendered (render_page, render_all); dropped
        # whenever the job changes, like the snapshot records.
        self._renders: dict[str, dict[int, bytes]] = {}

    # ------------------------------------------------------------------ observers

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event, job)` after each applied change.

        event is "submitted", "assigned", "finished" (completed or failed),
        "cancelled", "requeued" or "late_result" (a lost attempt's result arrived) with
        a copy of the job (one copy shared by every listener and the proposer: read it,
        never change it); or "restored" with None after `restore` replaced the whole
        table (listeners then re-read what they care about).
        """
        self._listeners.append(listener)

    def _notify(self, event: str, job: Job | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, job)
            except Exception:
                _log.failure("job table listener failed on {event}", event=event)

    # ------------------------------------------------------------------ apply

    def apply(self, index: int, command: bytes) -> object:
        """Apply the committed `command` (a serialized scheduler_pb2.Command) at log
        `index` and return the proposer's result.

        submit_job: the job (the existing one for a known id or a recent idempotency
        key; a submit that carries an assignment also applies it); submit_jobs: a list
        of those, in order; assign_jobs: a list as for assign_job; cancel_job: the job
        afterwards (unchanged when terminal), None if unknown;
        assign_job / update_job_status: the job if the command took effect, else None;
        batch_update_job_status: a list of those for its updates (its assignments, applied
        after them, answer nobody); register_worker, entry_forms and no-op: None.
        """
        decoded = scheduler_pb2.Command.FromString(command)
        kind = decoded.WhichOneof("command_type")
        if kind is None:
            return None
        return getattr(self, "_apply_" + kind)(getattr(decoded, kind))

    def _apply_submit_job(self, cmd: scheduler_pb2.SubmitJobCommand) -> Job | None:
        if not cmd.job_id:
            return None
        known = self._seq_of.get(cmd.job_id)
        if known is not None:
            return copy.copy(self._jobs[known])
        self._expire_keys(cmd.created_at_ms)
        key = cmd.idempotency_key
        if key and key in self._keys:
            job_id, first_ms = self._keys[key]
            seq = self._seq_of.get(job_id)
            if seq is not None and cmd.created_at_ms - first_ms < IDEMPOTENCY_WINDOW_MS:
                return copy.copy(self._jobs[seq])
        job = Job(
            job_id=cmd.job_id,
            command=cmd.command,
            created_at_ms=cmd.created_at_ms,
            image=sys.intern(cmd.image),  # a few images, shared by many jobs
            timeout_seconds=cmd.timeout_seconds,
            max_attempts=cmd.max_attempts,
            idempotency_key=key,
        )
        self._insert(self._next_seq, job)
        self._next_seq += 1
        if key:
            self._keys.pop(key, None)
            self._keys[key] = (job.job_id, job.created_at_ms)
        submitted = self._changed("submitted", job)
        if cmd.HasField("assignment") and cmd.assignment.job_id == cmd.job_id:
            self._apply_assign_job(cmd.assignment)
        return submitted

    def _apply_submit_jobs(self, cmd: scheduler_pb2.SubmitJobsCommand) -> list[Job | None]:
        return [self._apply_submit_job(job) for job in cmd.jobs]

    def _expire_keys(self, now_ms: int) -> None:
        """Forget idempotency keys older than the window, oldest first, by entry time.

        Entry times can step back after a leader change, so this stops at the first
        key still inside the window; the explicit check in submit covers the rest.
        """
        while self._keys:
            key, (_, first_ms) = next(iter(self._keys.items()))
            if now_ms - first_ms < IDEMPOTENCY_WINDOW_MS:
                return
            del self._keys[key]

    def _apply_assign_job(self, cmd: scheduler_pb2.AssignJobCommand) -> Job | None:
        job = self._find_to_change(cmd.job_id)
        if job is None or job.status is not JobStatus.PENDING or not cmd.worker_id:
            return None
        self._set_status(job, JobStatus.RUNNING)
        job.assigned_worker = cmd.worker_id
        job.worker_incarnation = cmd.worker_incarnation
        # Where and since when it runs, until the worker's result brings the real start.
        job.executed_by = cmd.worker_id
        job.started_at_ms = cmd.assigned_at_ms or None
        # attempt 0 comes from proposers that predate attempt numbers: count on.
        job.attempts = cmd.attempt or job.attempts + 1
        job.attempt_history += (
            AttemptRecord(job.attempts, cmd.worker_id, cmd.assigned_at_ms or None),
        )
        return self._changed("assigned", job)

    def _apply_assign_jobs(self, cmd: scheduler_pb2.AssignJobsCommand) -> list[Job | None]:
        return [self._apply_assign_job(assignment) for assignment in cmd.assignments]

    def _apply_update_job_status(self, cmd: scheduler_pb2.UpdateJobStatusCommand) -> Job | None:
        """Also applies a JobStatusUpdate: same field names and meanings.

        Only the worker an attempt was assigned to can finish it. A result of an attempt
        already declared lost only marks that attempt late."""
        job = self._find_to_change(cmd.job_id)
        if job is None or cmd.status not in (JobStatus.COMPLETED, JobStatus.FAILED):
            return None
        if job.status is not JobStatus.RUNNING or (cmd.attempt and cmd.attempt != job.attempts):
            self._mark_late(job, cmd.attempt, cmd.executed_by)
            return None
        if cmd.executed_by != job.assigned_worker:
            return None
        status = JobStatus(cmd.status)
        self._set_status(job, status)
        job.executed_by = cmd.executed_by
        job.exit_code = cmd.exit_code if cmd.HasField("exit_code") else None
        job.started_at_ms = cmd.started_at_ms if cmd.HasField("started_at_ms") else None
        job.completed_at_ms = cmd.completed_at_ms if cmd.HasField("completed_at_ms") else None
        if cmd.timed_out and status is JobStatus.FAILED:
            outcome = Outcome.TIMED_OUT
        else:
            outcome = Outcome.COMPLETED if status is JobStatus.COMPLETED else Outcome.FAILED
        self._end_attempt(job, outcome, job.completed_at_ms, job.started_at_ms)
        job.output = cmd.output
        job.error = cmd.error
        job.output_truncated = cmd.output_truncated
        return self._changed("finished", job)

    def _mark_late(self, job: Job, attempt: int, worker: int) -> None:
        """The result of `attempt` came from its worker after that attempt was declared
        lost: say so in its record (it did run) and change nothing else."""
        for n, record in enumerate(job.attempt_history):
            if (
                record.attempt == attempt
                and record.worker == worker
                and record.outcome is Outcome.LOST
                and not record.late
            ):
                history = list(job.attempt_history)
                history[n] = dataclasses.replace(record, late=True)
                job.attempt_history = tuple(history)
                self._changed("late_result", job)
                return

    def _end_attempt(
        self,
        job: Job,
        outcome: Outcome,
        finished_at_ms: int | None,
        started_at_ms: int | None = None,
    ) -> None:
        """Close the record of the running attempt; `started_at_ms` (the worker's real
        start) replaces the assignment time when known. A job restored from a snapshot
        without histories has no record to close."""
        history = job.attempt_history
        if not history or history[-1].attempt != job.attempts or history[-1].outcome is not None:
            return
        started = history[-1].started_at_ms if started_at_ms is None else started_at_ms
        ended = dataclasses.replace(
            history[-1], outcome=outcome, finished_at_ms=finished_at_ms, started_at_ms=started
        )
        job.attempt_history = (*history[:-1], ended)

    def _apply_batch_update_job_status(
        self, cmd: scheduler_pb2.BatchUpdateJobStatusCommand
    ) -> list[Job | None]:
        """The updates' results, in order; the assignments after them answer nobody."""
        results = [self._apply_update_job_status(update) for update in cmd.updates]
        for assignment in cmd.assignments:
            self._apply_assign_job(assignment)
        return results

    def _apply_cancel_job(self, cmd: scheduler_pb2.CancelJobCommand) -> Job | None:
        job = self._find_to_change(cmd.job_id)
        if job is None:
            return None
        if job.status.is_terminal:
            return copy.copy(job)
        if job.status is JobStatus.RUNNING:
            self._end_attempt(job, Outcome.CANCELLED, cmd.cancelled_at_ms or None)
        self._set_status(job, JobStatus.CANCELLED)
        job.completed_at_ms = cmd.cancelled_at_ms or None
        return self._changed("cancelled", job)

    def _apply_requeue_job(self, cmd: scheduler_pb2.RequeueJobCommand) -> Job | None:
        """A running attempt whose worker was lost: pending again while attempts
        remain, else failed with the command's error."""
        job = self._find_to_change(cmd.job_id)
        if job is None or job.status is not JobStatus.RUNNING or cmd.attempt != job.attempts:
            return None
        self._end_attempt(job, Outcome.LOST, cmd.failed_at_ms or None)
        if job.attempts < job.max_attempts:
            self._set_status(job, JobStatus.PENDING)
            job.assigned_worker = 0
            job.worker_incarnation = 0
            job.executed_by = 0
            job.started_at_ms = None
            return self._changed("requeued", job)
        self._set_status(job, JobStatus.FAILED)
        job.error = cmd.error
        job.exit_code = None
        job.completed_at_ms = cmd.failed_at_ms or None
        return self._changed("finished", job)

    def _apply_entry_forms(self, cmd: scheduler_pb2.EntryFormsCommand) -> None:
        self._entry_forms = max(self._entry_forms, cmd.forms)

    def _apply_register_worker(self, cmd: scheduler_pb2.RegisterWorkerCommand) -> None:
        if cmd.worker_id:
            self._workers.add(cmd.worker_id)

    def _changed(self, event: str, job: Job) -> Job:
        """Every change to a job ends here (or in _set_status): drop its cached record.
        One copy goes to the listeners and back to the proposer: read it, never change it."""
        self._forget(self._seq_of[job.job_id])
        changed = copy.copy(job)
        self._notify(event, changed)
        return changed

    def _forget(self, seq: int) -> None:
        """The job at `seq` changed: drop what was encoded of it."""
        self._snapshot_records.pop(seq, None)
        for cache in self._renders.values():
            cache.pop(seq, None)

    # ------------------------------------------------------------------ indexes

    def _find(self, job_id: str) -> Job | None:
        seq = self._seq_of.get(job_id)
        return None if seq is None else self._jobs[seq]

    def _find_to_change(self, job_id: str) -> Job | None:
        """The job to change in place (`_find`), first kept as it was for a snapshot
        being built."""
        seq = self._seq_of.get(job_id)
        if seq is None:
            return None
        job = self._jobs[seq]
        if self._build is not None:
            self._build.before_change(seq, job)
        return job

    def _insert(self, seq: int, job: Job) -> None:
        """Index a job; sequence numbers arrive in increasing order."""
        self._jobs[seq] = job
        self._seq_of[job.job_id] = seq
        self._order.append(seq)
        self._by_status[job.status].append(seq)

    def _set_status(self, job: Job, status: JobStatus) -> None:
        seq = self._seq_of[job.job_id]
        self._forget(seq)
        old = self._by_status[job.status]
        del old[bisect.bisect_left(old, seq)]
        bisect.insort(self._by_status[status], seq)
        job.status = status

    # ------------------------------------------------------------------ queries

    def get(self, job_id: str) -> Job | None:
        job = self._find(job_id)
        return None if job is None else copy.copy(job)

    def __len__(self) -> int:
        return len(self._order)

    def active_count(self) -> int:
        """Pending plus running jobs (the API layer caps this)."""
        return len(self._by_status[JobStatus.PENDING]) + len(self._by_status[JobStatus.RUNNING])

    def count(self, status: JobStatus) -> int:
        return len(self._by_status[status])

    def pending_jobs(self, limit: int | None = None) -> list[Job]:
        """Pending jobs in submission order (FIFO), at most `limit` of them."""
        seqs = self._by_status[JobStatus.PENDING]
        if limit is not None:
            seqs = seqs[:limit]
        return [copy.copy(self._jobs[seq]) for seq in seqs]

    def jobs_running_on(self, worker_id: int) -> list[Job]:
        """Running jobs assigned to `worker_id`, in submission order."""
        return [
            copy.copy(self._jobs[seq])
            for seq in self._by_status[JobStatus.RUNNING]
            if self._jobs[seq].assigned_worker == worker_id
        ]

    def running_counts(self) -> dict[int, int]:
        """worker id -> number of jobs running on it (workers with none are absent)."""
        counts: dict[int, int] = {}
        for seq in self._by_status[JobStatus.RUNNING]:
            worker = self._jobs[seq].assigned_worker
            counts[worker] = counts.get(worker, 0) + 1
        return counts

    def running_by_worker(self) -> dict[int, list[Job]]:
        """worker id -> copies of the jobs running on it."""
        jobs: dict[int, list[Job]] = {}
        for seq in self._by_status[JobStatus.RUNNING]:
            job = self._jobs[seq]
            jobs.setdefault(job.assigned_worker, []).append(copy.copy(job))
        return jobs

    def workers(self) -> list[int]:
        """Registered worker ids, ascending."""
        return sorted(self._workers)

    def entry_forms(self) -> int:
        """The entry forms the cluster writes: 1 until an EntryForms entry raised them."""
        return self._entry_forms

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest job (0 when empty): a stream's end mark."""
        return self._order[-1] if self._order else 0

    def list_jobs(self, query: ListQuery) -> JobPage:
        """A page of the jobs matching `query`, in creation order (newest first with
        `newest_first`).

        A page token records the last sequence number served, so jobs added between
        pages (always at the end) never shift a later page, in either order.
        """
        page, token, total = self._page(query)
        return JobPage([copy.copy(self._jobs[seq]) for seq in page], token, total)

    def render_page(self, query: ListQuery, key: str, render: Renderer) -> RenderedPage:
        """`list_jobs`, each job as `render(job)` gives it (see `_rendered`)."""
        page, token, total = self._page(query)
        return RenderedPage(self._rendered(page, key, render), token, total)

    def render_all(self, query: ListQuery, key: str, render: Renderer) -> list[bytes]:
        """Every job matching `query`'s filters (no paging), rendered as by
        `render_page`."""
        candidates = self._order if query.status is None else self._by_status[query.status]
        match = _matcher(query)
        ordered = reversed(candidates) if query.newest_first else candidates
        seqs = list(ordered) if match is None else [s for s in ordered if match(self._jobs[s])]
        return self._rendered(seqs, key, render)

    def _rendered(self, seqs, key: str, render: Renderer) -> list[bytes]:
        """`render(job)` of each job, made once per version of the job and kept under
        `key` until the job changes. `render` gets the table's own record: it must
        only read it."""
        cache = self._renders.setdefault(key, {})
        out = []
        for seq in seqs:
            rendered = cache.get(seq)
            if rendered is None:
                rendered = cache[seq] = render(self._jobs[seq])
            out.append(rendered)
        return out

    def _page(self, query: ListQuery) -> tuple[list[int], str, int]:
        """The sequence numbers of one page of `query`, the next page's token and the
        size of the whole filtered set."""
        size = _clamp_page_size(query.page_size)
        fingerprint = query.fingerprint()
        after = _decode_token(query.page_token, fingerprint) if query.page_token else None
        candidates = self._order if query.status is None else self._by_status[query.status]
        match = _matcher(query)
        if match is None:
            page, more = _slice_page(candidates, after, size, query.newest_first)
            total = len(candidates)
        else:
            page, more, total = [], False, 0
            ordered = reversed(candidates) if query.newest_first else candidates
            for seq in ordered:
                if not match(self._jobs[seq]):
                    continue
                total += 1
                if after is not None and (seq >= after if query.newest_first else seq <= after):
                    continue
                if len(page) < size:
                    page.append(seq)
                else:
                    more = True
        token = _encode_token(page[-1], fingerprint) if more else ""
        return page, token, total

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole applied state as deterministic JSON (equal tables, equal bytes).

        It is the compact, key-sorted JSON of {attempt_fields, entry_forms, fields,
        format, idempotency_keys, jobs, next_seq, workers} (format 1: {format,
        idempotency_keys, jobs, next_seq, workers}), put together from cached per-job
        records: taken every compaction, it must not re-encode a large table of
        finished jobs.
        """
        return self._new_build().step(math.inf)

    def begin_snapshot(self) -> SnapshotBuild:
        """The `snapshot` of the table as it is now, built in steps while entries
        apply (one build at a time: a new one replaces the last)."""
        self._build = self._new_build()
        return self._build

    def _new_build(self) -> SnapshotBuild:
        snapshot_format = self.snapshot_format()
        if snapshot_format != self._records_format:
            self._snapshot_records = {}
            self._records_format = snapshot_format
        if snapshot_format == 1:  # exactly as versions before format 2 wrote it
            head = dumps({"format": 1, "idempotency_keys": []})[:-3]
        else:
            head = dumps(
                {
                    "attempt_fields": _ATTEMPT_FIELDS,
                    "entry_forms": self._entry_forms,
                    "fields": _RECORD_FIELDS,
                    "format": SNAPSHOT_FORMAT,
                    "idempotency_keys": [],
                }
            )[:-3]
        return SnapshotBuild(
            head=head,
            keys=list(self._keys.items()),
            order=self._order,
            jobs=self._jobs,
            records=self._snapshot_records,
            encode=functools.partial(_snapshot_record, snapshot_format),
            tail=dumps({"next_seq": self._next_seq, "workers": sorted(self._workers)})[1:],
            on_done=self._build_done,
        )

    def _build_done(self, build: SnapshotBuild) -> None:
        if self._build is build:
            self._build = None

    def snapshot_format(self) -> int:
        """The format the next snapshot is written in (see SNAPSHOT_FORMAT)."""
        return SNAPSHOT_FORMAT if self._entry_forms >= FORMS_FOR_SNAPSHOT_FORMAT else 1

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a `snapshot`; ValueError (state untouched) if the
        data is not one."""
        SnapshotRestore(self, data, whole=True).step(math.inf)

    def begin_restore(self, data: bytes) -> SnapshotRestore:
        """A `restore` of `data` done in steps; the table is unchanged until the step
        that completes it."""
        return SnapshotRestore(self, data, whole=False)

    def _replace_by(self, replacement: JobTable) -> None:
        listeners = self._listeners
        vars(self).update(vars(replacement))
        self._listeners = listeners
        self._notify("restored", None)


_STREAMED = frozenset(("jobs", "idempotency_keys"))
_UNITS_PER_KEY = 1 / 8
"""An idempotency key read or loaded is this part of a step's unit, a job record."""


@implementer(ISnapshotRestore)
class SnapshotRestore:
    """A table's `restore` in steps: the snapshot is read a record at a time
    (`read_object`), then a table is made of it a job at a time, then swapped in.
    With `whole`, the snapshot is read in one call (a fifth faster in all: for a
    restore in one step)."""

    def __init__(self, table: JobTable, data: bytes, whole: bool) -> None:
        self._table = table
        self._values: dict[str, object] = {}
        self._elements: dict[str, list] = {}
        self._units = self._work(data, whole)
        self._refused: ValueError | None = None

    def step(self, limit: float) -> bool:
        """Read or load up to about `limit` job records; True once the table has been
        replaced. ValueError (the table unchanged, and at every later step) if the
        data is not a snapshot."""
        if self._refused is not None:
            raise self._refused
        spent = 0.0
        try:
            for unit in self._units:
                spent += unit
                if spent >= limit:
                    return False
        except (AttributeError, IndexError, KeyError, RecursionError, TypeError, ValueError) as e:
            self._refused = ValueError(f"not a job table snapshot: {e}")
            raise self._refused from e
        return True

    def _work(self, data: bytes, whole: bool):
        """The units of work, as they are done; the last one swaps the table in."""
        text = data.decode("utf-8")
        values, elements = self._values, self._elements
        if whole:
            state = json.loads(text)
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
            values.update(state)
            for name in _STREAMED:
                if isinstance(values.get(name), list):
                    elements[name] = values.pop(name)
        else:
            for member in read_object(text, _STREAMED, values, elements):
                yield _UNITS_PER_KEY if member == "idempotency_keys" else 1
        replacement = yield from self._load(values, elements)
        self._table._replace_by(replacement)

    def _load(self, header: dict, elements: dict[str, list]):
        if header["format"] not in (1, SNAPSHOT_FORMAT):
            raise ValueError(f"unknown snapshot format {header['format']!r}")
        replacement = JobTable()
        replacement._next_seq = header["next_seq"]
        decode = _job_decoder(header)
        for record in elements["jobs"]:
            seq, job = decode(record)
            if not replacement.last_seq < seq < replacement._next_seq:
                raise ValueError(f"job sequence {seq!r} out of order")
            replacement._insert(seq, job)
            yield 1
        for key, job_id, first_ms in elements["idempotency_keys"]:
            replacement._keys[key] = (job_id, first_ms)
            yield _UNITS_PER_KEY
        replacement._workers = set(header["workers"])
        replacement._entry_forms = int(header.get("entry_forms", 1))
        if _encoded_as_now(header):  # each job's record, as its next snapshot has it
            records = replacement._snapshot_records
            for values in elements["jobs"]:
                records[values[-1]] = dumps(values)
                yield 1
        return replacement
