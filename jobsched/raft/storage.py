"""What a Raft node keeps across restarts, and an in-memory store for it.

`MemoryStorage` keeps what it is told in plain Python objects: a node restarted with the
same object reloads it, which is what tests of restarts need. Without --data-dir a node
uses a fresh one and so forgets everything when the process ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer
from zope.interface import implementer

from jobsched.interfaces import IRaftStorage
from jobsched.raft.messages import LogEntry


@dataclass(frozen=True)
class Snapshot:
    """The state machine's applied state up to `index` (whose entry has `term`)."""

    index: int
    term: int
    data: bytes


@dataclass
class StoredState:
    """Everything a store holds: hard state, latest snapshot and the log after it."""

    term: int = 0
    voted_for: int = 0
    snapshot: Snapshot | None = None
    entries: list[LogEntry] = field(default_factory=list)


@implementer(IRaftStorage)
class MemoryStorage:
    """IRaftStorage in memory; every write is durable at once (its Deferred has fired)."""

    def __init__(self) -> None:
        self._state = StoredState()

    def load(self) -> StoredState:
        state = self._state
        return StoredState(state.term, state.voted_for, state.snapshot, list(state.entries))

    def save_hard_state(self, term: int, voted_for: int) -> defer.Deferred:
        self._state.term = term
        self._state.voted_for = voted_for
        return defer.succeed(None)

    def append(self, entries: list[LogEntry]) -> defer.Deferred:
        if entries:
            self._drop_from(entries[0].index)
            self._state.entries.extend(entries)
        return defer.succeed(None)

    def truncate(self, from_index: int) -> defer.Deferred:
        self._drop_from(from_index)
        return defer.succeed(None)

    def save_snapshot(self, index: int, term: int, data: bytes) -> defer.Deferred:
        self._state.snapshot = Snapshot(index, term, data)
        self._state.entries = [e for e in self._state.entries if e.index > index]
        return defer.succeed(None)

    def save_compaction(self, index: int, term: int, data: bytes) -> defer.Deferred:
        """Written at once, as every write here."""
        return self.save_snapshot(index, term, data)

    def close(self) -> defer.Deferred:
        return defer.succeed(None)

    def _drop_from(self, index: int) -> None:
        entries = self._state.entries
        keep = len(entries)
        while keep and entries[keep - 1].index >= index:
            keep -= 1
        del entries[keep:]
