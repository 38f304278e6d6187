"""Raft's internal messages <-> the wire messages of proto/scheduler.proto.

InstallSnapshot travels as opaque chunks (fields 1-4 and ext 7/8/9); the legacy
structured fields 5/6 (jobs, workers) stay empty.
"""

from __future__ import annotations

from google.protobuf.message import Message

from jobsched._proto import scheduler_pb2 as pb
from jobsched.raft import messages as m

Internal = (
    m.VoteRequest
    | m.VoteResponse
    | m.AppendEntriesRequest
    | m.AppendEntriesResponse
    | m.TimeoutNowRequest
    | m.TimeoutNowResponse
    | m.InstallSnapshotRequest
    | m.InstallSnapshotResponse
)


def _append_request_to_wire(msg: m.AppendEntriesRequest) -> pb.AppendEntriesRequest:
    wire = pb.AppendEntriesRequest(
        term=msg.term,
        leader_id=msg.leader_id,
        prev_log_index=msg.prev_log_index,
        prev_log_term=msg.prev_log_term,
        leader_commit=msg.leader_commit,
        retain_from=msg.retain_from,
    )
    wire.entries.extend(
        pb.LogEntry(term=entry.term, index=entry.index, command=entry.command)
        for entry in msg.entries
    )
    return wire


def _simple_fields(msg, names) -> dict:
    return {name: getattr(msg, name) for name in names}


_SIMPLE = {
    m.VoteRequest: (
        pb.VoteRequest,
        ("term", "candidate_id", "last_log_index", "last_log_term", "pre_vote"),
    ),
    m.VoteResponse: (pb.VoteResponse, ("term", "vote_granted")),
    m.AppendEntriesResponse: (pb.AppendEntriesResponse, ("term", "success", "match_index")),
    m.TimeoutNowRequest: (pb.TimeoutNowRequest, ("term", "leader_id")),
    m.TimeoutNowResponse: (pb.TimeoutNowResponse, ("term", "success")),
    m.InstallSnapshotRequest: (
        pb.InstallSnapshotRequest,
        (
            "term",
            "leader_id",
            "last_included_index",
            "last_included_term",
            "offset",
            "data",
            "done",
        ),
    ),
    m.InstallSnapshotResponse: (pb.InstallSnapshotResponse, ("term",)),
}
_SIMPLE_FROM_WIRE = {wire: (internal, names) for internal, (wire, names) in _SIMPLE.items()}


def to_wire(msg: Internal) -> Message:
    """The scheduler_pb2 message for an internal Raft message."""
    if isinstance(msg, m.AppendEntriesRequest):
        return _append_request_to_wire(msg)
    wire_type, names = _SIMPLE[type(msg)]
    return wire_type(**_simple_fields(msg, names))


def from_wire(wire: Message) -> Internal:
    """The internal Raft message for a scheduler_pb2 message."""
    if isinstance(wire, pb.AppendEntriesRequest):
        return m.AppendEntriesRequest(
            wire.term,
            wire.leader_id,
            wire.prev_log_index,
            wire.prev_log_term,
            [m.LogEntry(e.term, e.index, e.command) for e in wire.entries],
            wire.leader_commit,
            wire.retain_from,
        )
    internal_type, names = _SIMPLE_FROM_WIRE[type(wire)]
    return internal_type(**_simple_fields(wire, names))
