"""The in-memory Raft log: entries after a snapshot boundary.

Indexes start at 1. The boundary (snapshot_index, snapshot_term) stands for every entry
up to and including snapshot_index, which have been compacted into a snapshot; index 0
with term 0 means "before the log".
"""

from __future__ import annotations

from collections.abc import Iterable

from jobsched.raft.messages import LogEntry


class RaftLog:
    """Consecutive LogEntry records following a snapshot boundary."""

    def __init__(
        self, snapshot_index: int = 0, snapshot_term: int = 0, entries: Iterable[LogEntry] = ()
    ) -> None:
        self._snapshot_index = snapshot_index
        self._snapshot_term = snapshot_term
        self._entries: list[LogEntry] = []
        self.append(list(entries))

    @property
    def snapshot_index(self) -> int:
        return self._snapshot_index

    @property
    def snapshot_term(self) -> int:
        return self._snapshot_term

    @property
    def first_index(self) -> int:
        """The first index still held (last_index + 1 when everything is compacted)."""
        return self._snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self._snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None when compacted away or beyond the end."""
        offset = index - self._snapshot_index
        if offset == 0:
            return self._snapshot_term
        if offset < 0 or offset > len(self._entries):
            return None
        return self._entries[offset - 1].term

    def entry(self, index: int) -> LogEntry:
        """The entry at `index`, which must be held (first_index <= index <= last_index)."""
        offset = index - self._snapshot_index
        if offset < 1 or offset > len(self._entries):
            raise IndexError(f"log index {index} not held")
        return self._entries[offset - 1]

    def slice(
        self, start: int, end: int | None = None, max_bytes: int | None = None
    ) -> list[LogEntry]:
        """Entries in [start, end) (end defaults to past the last entry).

        With `max_bytes`, stop once the commands' encoded size would exceed it, but
        always return at least one entry when one is available.
        """
        start = max(start, self.first_index)
        lo = start - self._snapshot_index - 1
        hi = (
            len(self._entries)
            if end is None
            else min(end - self._snapshot_index - 1, len(self._entries))
        )
        if max_bytes is None or lo >= hi:
            return self._entries[lo:hi]
        total = 0
        stop = lo
        while stop < hi:
            total += len(self._entries[stop].command)
            if total > max_bytes and stop > lo:
                break
            stop += 1
        return self._entries[lo:stop]

    def append(self, entries: list[LogEntry]) -> None:
        """Append entries that continue the log exactly at last_index + 1."""
        expected = self.last_index + 1
        for entry in entries:
            if entry.index != expected:
                raise ValueError(f"log entry {entry.index} does not follow {expected - 1}")
            expected += 1
        self._entries.extend(entries)

    def truncate_from(self, index: int) -> None:
        """Drop every entry at or after `index` (a conflicting suffix)."""
        if index <= self._snapshot_index:
            raise ValueError(f"cannot truncate at {index}: compacted up to {self._snapshot_index}")
        del self._entries[index - self._snapshot_index - 1 :]

    def compact(self, index: int, term: int) -> None:
        """Move the boundary to (index, term), dropping entries up to `index`.

        Entries after `index` are kept only when the entry at `index` has `term`
        (the log agrees with the snapshot); otherwise the whole log is dropped.
        """
        if index <= self._snapshot_index:
            return
        if self.term_at(index) == term:
            del self._entries[: index - self._snapshot_index]
        else:
            self._entries = []
        self._snapshot_index = index
        self._snapshot_term = term
