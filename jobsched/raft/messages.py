"""Raft's internal messages: plain records the pure core consumes and produces.

The codec (jobsched.raft.codec) turns them into the wire messages of
proto/scheduler.proto and back. A log entry's command is opaque bytes that Raft never
looks inside (the state machine decodes them); empty bytes are a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogEntry:
    term: int
    index: int
    command: bytes = b""

    @property
    def is_noop(self) -> bool:
        return not self.command


@dataclass(frozen=True)
class VoteRequest:
    term: int
    candidate_id: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False


@dataclass(frozen=True)
class VoteResponse:
    term: int
    vote_granted: bool


@dataclass(frozen=True)
class AppendEntriesRequest:
    term: int
    leader_id: int
    prev_log_index: int
    prev_log_term: int
    entries: list[LogEntry]
    leader_commit: int
    retain_from: int = 0  # the lowest index a live follower lacks (0: none)


@dataclass(frozen=True)
class AppendEntriesResponse:
    term: int
    success: bool
    match_index: int


@dataclass(frozen=True)
class TimeoutNowRequest:
    term: int
    leader_id: int


@dataclass(frozen=True)
class TimeoutNowResponse:
    term: int
    success: bool


@dataclass(frozen=True)
class InstallSnapshotRequest:
    """One chunk of a snapshot: data[offset:offset+len(data)], last chunk has done=True."""

    term: int
    leader_id: int
    last_included_index: int
    last_included_term: int
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True)
class InstallSnapshotResponse:
    term: int
