"""Raft messages survive the trip to protobuf and back, field for field."""

from __future__ import annotations

import pytest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.raft import codec
from jobsched.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    TimeoutNowRequest,
    TimeoutNowResponse,
    VoteRequest,
    VoteResponse,
)

BIG = 2**63 + 5  # uint64 values above int64 range


def submit(job_id: str) -> pb.Command:
    return pb.Command(
        submit_job=pb.SubmitJobCommand(
            job_id=job_id, command="echo hi", created_at_ms=1, image="alpine"
        )
    )


MESSAGES = [
    VoteRequest(3, 2, 10, 2),
    VoteRequest(BIG, BIG, BIG, BIG, pre_vote=True),
    VoteResponse(3, True),
    VoteResponse(4, False),
    AppendEntriesRequest(5, 1, 7, 4, [], 6),
    AppendEntriesRequest(
        5, 1, 7, 4, [LogEntry(5, 8, submit("a")), LogEntry(5, 9), LogEntry(5, 10, submit("b"))], 7
    ),
    AppendEntriesResponse(5, True, 10),
    AppendEntriesResponse(6, False, 3),
    TimeoutNowRequest(5, 1),
    TimeoutNowResponse(6, True),
    InstallSnapshotRequest(5, 1, 100, 4, 0, b"\x00\xffchunk", False),
    InstallSnapshotRequest(5, 1, 100, 4, 262144, b"", True),
    InstallSnapshotResponse(5),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    wire = codec.to_wire(message)
    parsed = type(wire).FromString(wire.SerializeToString())
    assert codec.from_wire(parsed) == message


def test_wire_types_and_numbers():
    assert isinstance(codec.to_wire(VoteRequest(1, 2, 3, 4, True)), pb.VoteRequest)
    wire = codec.to_wire(InstallSnapshotRequest(5, 1, 100, 4, 7, b"xy", True))
    assert isinstance(wire, pb.InstallSnapshotRequest)
    assert (wire.offset, wire.data, wire.done) == (7, b"xy", True)
    assert not wire.jobs and not wire.workers  # structured fields 5/6 stay empty
    entry = codec.to_wire(
        AppendEntriesRequest(1, 1, 0, 0, [LogEntry(1, 1, submit("a"))], 0)
    ).entries[0]
    assert (entry.term, entry.index, entry.command.submit_job.job_id) == (1, 1, "a")


def test_noop_entry_stays_a_noop():
    wire = codec.to_wire(AppendEntriesRequest(1, 1, 0, 0, [LogEntry(1, 1)], 0))
    parsed = codec.from_wire(pb.AppendEntriesRequest.FromString(wire.SerializeToString()))
    assert parsed.entries[0].is_noop


def test_unknown_message_is_refused():
    with pytest.raises(KeyError):
        codec.to_wire(object())
    with pytest.raises(KeyError):
        codec.from_wire(pb.Command())
