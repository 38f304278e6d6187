"""A job table snapshot put together in steps, exactly as the table was when it began.

A compaction with 100,000 jobs changed since the last one would otherwise encode them
all in one reactor turn (about half a second on our machines, on every node at once):
`JobTable.begin_snapshot` hands out a `SnapshotBuild` that the Raft service advances a
slice at a time while later entries apply. The table's jobs change in place, so the
table calls `before_change` with each job it is about to change: the build keeps the
job as it was (its cached record, or a shallow copy) if it has not reached it yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from zope.interface import implementer

from jobsched.interfaces import ISnapshotBuild
from jobsched.jobs.model import Job

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# Jobs whose record is already encoded cost far less than those to encode: a step
# visits at most this many times its limit.
_VISITS_PER_ENCODE = 16
# Idempotency keys are encoded this many to the unit of a step's limit.
_KEYS_PER_ENCODE = 8


def dumps(value) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the snapshot encoding."""
    return _ENCODER.encode(value).encode("utf-8")


@implementer(ISnapshotBuild)
class SnapshotBuild:
    """The snapshot bytes of a job table as of one moment, built by `step`.

    The result is `head` + the idempotency `keys` (items of key -> (job id, first
    ms)) as a JSON array of [key, job id, first ms] + `,"jobs":[` + each job's record,
    comma-separated + `],` + `tail`: the bytes `JobTable.snapshot` returned at that
    moment.
    """

    def __init__(
        self,
        *,
        head: bytes,
        keys: list[tuple[str, tuple[str, int]]],
        order: list[int],
        jobs: dict[int, Job],
        records: dict[int, bytes],
        encode: Callable[[int, Job], bytes],
        tail: bytes,
        on_done: Callable[[SnapshotBuild], None],
    ) -> None:
        self._keys = keys
        self._encoded_keys: list[bytes] = []
        self._keys_done = 0
        self._order = order  # the table's own list, appended to after the build began
        self._end = len(order)
        self._last_seq = order[-1] if order else 0
        self._position = 0
        self._jobs = jobs
        self._records = records
        self._encode = encode
        self._kept: dict[int, bytes | Job] = {}  # seq -> the job as it was at the start
        self._parts: list[bytes] = []
        self._head = head
        self._tail = tail
        self._on_done = on_done

    def before_change(self, seq: int, job: Job) -> None:
        """The table is about to change the job at `seq` in place: keep it as it was,
        if the build still needs it."""
        if (
            self._position < self._end
            and self._order[self._position] <= seq <= self._last_seq
            and seq not in self._kept
        ):
            self._kept[seq] = self._records.get(seq) or job.__copy__()

    def step(self, limit: float) -> bytes | None:
        """Encode up to about `limit` job records; the snapshot once complete, else None."""
        spent = self._step_keys(limit)
        order, records, kept, encode, parts = (
            self._order,
            self._records,
            self._kept,
            self._encode,
            self._parts,
        )
        position, end = self._position, self._end
        visits = 0
        visit_limit = limit * _VISITS_PER_ENCODE
        while position < end and spent < limit and visits < visit_limit:
            seq = order[position]
            position += 1
            visits += 1
            record = kept.pop(seq, None)
            if record is None:  # unchanged since the start: the table's own version
                record = records.get(seq)
                if record is None:
                    record = records[seq] = encode(seq, self._jobs[seq])
                    spent += 1
            elif not isinstance(record, bytes):
                record = encode(seq, record)
                spent += 1
            parts.append(record)
        self._position = position
        if position < end or self._keys_done < len(self._keys):
            return None
        self._on_done(self)
        keys = b",".join(self._encoded_keys)
        head = b"".join((self._head, b"[", keys, b'],"jobs":['))
        tail = b"]," + self._tail
        if not parts:
            return head + tail
        # One copy of the records (tens of megabytes with 100,000 jobs), not two.
        parts[0] = head + parts[0]
        parts[-1] += tail
        return b",".join(parts)

    def _step_keys(self, limit: float) -> float:
        """Encode the next idempotency keys; the part of `limit` that took."""
        keys, done = self._keys, self._keys_done
        if done >= len(keys):
            return 0
        count = max(1, int(min(len(keys) - done, limit * _KEYS_PER_ENCODE)))
        chunk = [[key, job_id, first_ms] for key, (job_id, first_ms) in keys[done : done + count]]
        self._encoded_keys.append(dumps(chunk)[1:-1])
        self._keys_done = done + count
        return count / _KEYS_PER_ENCODE
