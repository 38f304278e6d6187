"""Raft messages survive the trip to protobuf and back, field for field."""

from __future__ import annotations

from twisted.trial import unittest

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
from tests.cases import add_cases

BIG = 2**63 + 5  # uint64 values above int64 range


def submit(job_id: str) -> bytes:
    """A SubmitJob entry's bytes (opaque to Raft)."""
    return pb.Command(
        submit_job=pb.SubmitJobCommand(
            job_id=job_id, command="echo hi", created_at_ms=1, image="alpine"
        )
    ).SerializeToString()


MESSAGES = {
    "vote_request": VoteRequest(3, 2, 10, 2),
    "pre_vote_request_with_uint64_values": VoteRequest(BIG, BIG, BIG, BIG, pre_vote=True),
    "vote_granted": VoteResponse(3, True),
    "vote_refused": VoteResponse(4, False),
    "heartbeat_append": AppendEntriesRequest(5, 1, 7, 4, [], 6),
    "append_with_entries_and_noop": AppendEntriesRequest(
        5, 1, 7, 4, [LogEntry(5, 8, submit("a")), LogEntry(5, 9), LogEntry(5, 10, submit("b"))], 7
    ),
    "append_accepted": AppendEntriesResponse(5, True, 10),
    "append_refused": AppendEntriesResponse(6, False, 3),
    "timeout_now_request": TimeoutNowRequest(5, 1),
    "timeout_now_response": TimeoutNowResponse(6, True),
    "install_snapshot_first_chunk": InstallSnapshotRequest(
        5, 1, 100, 4, 0, b"\x00\xffchunk", False
    ),
    "install_snapshot_last_empty_chunk": InstallSnapshotRequest(5, 1, 100, 4, 262144, b"", True),
    "install_snapshot_response": InstallSnapshotResponse(5),
}


class RoundTripTests(unittest.TestCase):
    """Each message of MESSAGES, serialized and parsed back."""

    def check_round_trip(self, message):
        """The message survives the wire field for field."""
        wire = codec.to_wire(message)
        parsed = type(wire).FromString(wire.SerializeToString())
        self.assertEqual(codec.from_wire(parsed), message)


add_cases(RoundTripTests, "test_round_trip", MESSAGES, RoundTripTests.check_round_trip)


class WireFormTests(unittest.TestCase):
    """The protobuf side of the conversion."""

    def test_wire_types_and_numbers(self):
        self.assertIsInstance(codec.to_wire(VoteRequest(1, 2, 3, 4, True)), pb.VoteRequest)
        wire = codec.to_wire(InstallSnapshotRequest(5, 1, 100, 4, 7, b"xy", True))
        self.assertIsInstance(wire, pb.InstallSnapshotRequest)
        self.assertEqual((wire.offset, wire.data, wire.done), (7, b"xy", True))
        # structured fields 5/6 stay empty
        self.assertFalse(wire.jobs)
        self.assertFalse(wire.workers)
        entry = codec.to_wire(
            AppendEntriesRequest(1, 1, 0, 0, [LogEntry(1, 1, submit("a"))], 0)
        ).entries[0]
        self.assertEqual((entry.term, entry.index, entry.command), (1, 1, submit("a")))
        self.assertEqual(pb.Command.FromString(entry.command).submit_job.job_id, "a")

    def test_noop_entry_stays_a_noop(self):
        wire = codec.to_wire(AppendEntriesRequest(1, 1, 0, 0, [LogEntry(1, 1)], 0))
        parsed = codec.from_wire(pb.AppendEntriesRequest.FromString(wire.SerializeToString()))
        self.assertTrue(parsed.entries[0].is_noop)
        self.assertEqual(parsed.entries[0].command, b"")

    def test_entry_bytes_cross_unchanged_whatever_they_hold(self):
        """Raft never looks into a command: any bytes come back as they were sent."""
        opaque = bytes(range(256))
        wire = codec.to_wire(AppendEntriesRequest(1, 1, 0, 0, [LogEntry(1, 1, opaque)], 0))
        parsed = codec.from_wire(pb.AppendEntriesRequest.FromString(wire.SerializeToString()))
        self.assertEqual(parsed.entries, [LogEntry(1, 1, opaque)])
        self.assertFalse(parsed.entries[0].is_noop)

    def test_unknown_message_is_refused(self):
        with self.assertRaises(KeyError):
            codec.to_wire(object())
        with self.assertRaises(KeyError):
            codec.from_wire(pb.Command())
