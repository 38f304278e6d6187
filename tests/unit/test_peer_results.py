"""Worker results on the peer port: a follower sends them back on its leader's
connection (api/peer_port.py) when the leader says it takes them, and the leader
(raft/peer_links.py) answers each once committed, over real TCP and TLS on 127.0.0.1.
Also the framing itself (net/frames.py), read in pieces of every size.
"""

from __future__ import annotations

import random
import socket
import struct

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.peer_port import results_taker
from jobsched.identity import TlsFiles
from jobsched.interfaces import IPeerResults
from jobsched.metrics import NodeMetrics
from jobsched.net.access import AccessPolicy
from jobsched.net.channels import Wire
from jobsched.net.frames import SIDE_FRAME, FramedMessages
from jobsched.raft import codec
from tests.pki import Pki
from tests.unit.test_append_streams import FOLLOWER, LEADER, FollowerRaft, append
from tests.unit.test_cluster_api import wait_until
from tests.unit.test_peer_port import PeerPortHarness

TERM = 3


class FollowingRaft(FollowerRaft):
    """A follower whose status names LEADER as its leader in TERM (`leader` changes it)."""

    leader = (LEADER, TERM)

    def status(self):
        leader_id, term = self.leader
        return _Status(leader_id, term)


class _Status:
    def __init__(self, leader_id: int, current_term: int) -> None:
        self.leader_id = leader_id
        self.current_term = current_term


class RecordingApi:
    """The leader's ClusterAPI as far as results go: each delivery waits for the test."""

    def __init__(self) -> None:
        self.deliveries: list[list] = []
        self.commits: list[defer.Deferred] = []

    def accept_results(self, updates):
        self.deliveries.append(list(updates))
        committed = defer.Deferred()
        self.commits.append(committed)
        return committed


def results(executed_by: int = FOLLOWER) -> pb.ForwardJobStatusRequest:
    update = pb.UpdateJobStatusCommand(
        job_id="j1", status=pb.JOB_STATUS_COMPLETED, executed_by=executed_by
    )
    return pb.ForwardJobStatusRequest(updates=[update])


class PeerResultsTests(PeerPortHarness, unittest.TestCase):
    def start_pair(self, wire_of=None, take=True):
        """A follower and a leader that sent it one AppendEntries on its peer port;
        the leader takes results (into self.api) unless `take` is false."""
        self.start_follower(wire_of(FOLLOWER) if wire_of else None, raft=FollowingRaft())
        transport = self.start_leader(wire_of(LEADER) if wire_of else None)
        self.api = RecordingApi()
        self.leader_metrics = NodeMetrics()
        if take:
            access = AccessPolicy({FOLLOWER: None}, tls=wire_of is not None)
            self.links.take_results(results_taker(self.api, access, self.leader_metrics))
        return transport

    @defer.inlineCallbacks
    def on_the_peer_port(self, transport):
        yield self.answered_on_the_peer_port(transport, term=TERM)
        yield transport.send(FOLLOWER, append(2, term=TERM))  # on the peer port

    def taken(self, via: str) -> float:
        sample = self.leader_metrics.registry.get_sample_value(
            "jobsched_results_received_total", {"via": via}
        )
        return sample or 0.0

    def test_the_peer_port_provides_the_results_interface(self):
        self.start_follower()
        self.assertTrue(verifyObject(IPeerResults, self.peer_port))

    @defer.inlineCallbacks
    def test_results_go_back_on_the_leaders_connection_and_are_answered_once_committed(self):
        transport = self.start_pair()
        yield self.on_the_peer_port(transport)
        delivered = self.peer_port.send_results(results(), 5.0)
        self.assertIsNotNone(delivered)
        yield wait_until(lambda: self.api.deliveries, "the leader took them", 10)
        self.assertEqual([u.job_id for u in self.api.deliveries[0]], ["j1"])
        self.assertNoResult(delivered)  # not before the commit
        self.api.commits[0].callback(None)
        answer = yield delivered
        self.assertIsInstance(answer, pb.ForwardJobStatusResponse)
        self.assertEqual(self.taken("peer_port"), 1)
        answer = yield transport.send(FOLLOWER, append(3, term=TERM))  # appends go on
        self.assertEqual(answer.match_index, 3)

    @defer.inlineCallbacks
    def test_deliveries_are_answered_by_call_whatever_the_order_of_commits(self):
        transport = self.start_pair()
        yield self.on_the_peer_port(transport)
        first = self.peer_port.send_results(results(), 5.0)
        second = self.peer_port.send_results(results(), 5.0)
        yield wait_until(lambda: len(self.api.deliveries) == 2, "both taken", 10)
        self.api.commits[1].callback(None)
        yield second
        self.assertNoResult(first)
        self.api.commits[0].errback(errors.LeadershipLost())
        lost = yield self.assertFailure(first, errors.NoLeader)  # the code's type, as on gRPC
        self.assertEqual(str(lost), errors.LeadershipLost.default_message)

    @defer.inlineCallbacks
    def test_none_go_to_a_leader_that_does_not_take_them_or_is_no_longer_the_leader(self):
        transport = self.start_pair(take=False)  # as a leader of the version before
        yield self.on_the_peer_port(transport)
        self.assertIsNone(self.peer_port.send_results(results(), 5.0))
        self.links.take_results(results_taker(self.api, AccessPolicy({}, False), NodeMetrics()))
        self.links.close()  # the next request opens a connection that says it takes them
        yield transport.send(FOLLOWER, append(3, term=TERM))
        sent = self.peer_port.send_results(results(), 5.0)
        self.assertIsNotNone(sent)
        self.follower.leader = (LEADER, TERM + 1)  # a new term: this connection is stale
        self.assertIsNone(self.peer_port.send_results(results(), 5.0))
        transport.close()
        yield self.assertFailure(sent, errors.LeaderUnreachable)

    @defer.inlineCallbacks
    def test_a_refusal_of_the_leader_comes_back_typed_and_counts(self):
        transport = self.start_pair()
        yield self.on_the_peer_port(transport)
        forged = self.peer_port.send_results(results(executed_by=7), 5.0)
        refused = yield self.assertFailure(forged, errors.PermissionDenied)
        self.assertIn("node 7 is not a peer", str(refused))
        self.assertEqual(self.api.deliveries, [])
        errors_counted = self.leader_metrics.registry.get_sample_value(
            "jobsched_grpc_errors_total",
            {"method": "ForwardJobStatus", "code": "PERMISSION_DENIED"},
        )
        self.assertEqual(errors_counted, 1)

    @defer.inlineCallbacks
    def test_a_connection_that_ends_or_an_answer_that_does_not_come_fails_the_delivery(self):
        transport = self.start_pair()
        yield self.on_the_peer_port(transport)
        late = self.peer_port.send_results(results(), 0.2)
        yield self.assertFailure(late, errors.LeaderUnreachable)
        yield wait_until(lambda: self.api.deliveries, "the leader took it anyway", 10)
        self.api.commits[0].callback(None)  # its answer comes too late: ignored
        waiting = self.peer_port.send_results(results(), 5.0)
        yield wait_until(lambda: len(self.api.deliveries) == 2, "taken", 10)
        transport.close()
        yield self.assertFailure(waiting, errors.LeaderUnreachable)
        self.assertIsNone(self.peer_port.send_results(results(), 5.0))

    @defer.inlineCallbacks
    def test_with_tls_the_leader_sees_the_followers_certificate(self):
        pki = Pki(self.mktemp()).nodes(LEADER, FOLLOWER)

        def wire_of(node_id: int) -> Wire:
            cert, key = pki.node(node_id)
            return Wire(TlsFiles(str(pki.ca_path), str(cert), str(key)))

        transport = self.start_pair(wire_of)
        yield self.on_the_peer_port(transport)
        delivered = self.peer_port.send_results(results(), 5.0)
        yield wait_until(lambda: self.api.deliveries, "the leader took them", 10)
        self.api.commits[0].callback(None)
        yield delivered
        refused = self.peer_port.send_results(results(executed_by=LEADER), 5.0)
        failure = yield self.assertFailure(refused, errors.PermissionDenied)
        self.assertIn(f"cannot speak for node {LEADER}", str(failure))


class Frames(FramedMessages):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, bytes]] = []

    def frame_received(self, frame: bytes) -> None:
        self.received.append(("frame", frame))

    def side_frame_received(self, frame: bytes) -> None:
        self.received.append(("side", frame))


def connected(protocol: FramedMessages) -> StringTransport:
    transport = StringTransport()
    transport.setTcpNoDelay = lambda enabled: None
    transport.abortConnection = transport.loseConnection
    protocol.makeConnection(transport)
    return transport


def read_exactly(sock: socket.socket, count: int) -> bytes:
    """`count` bytes from a blocking socket (its timeout bounds each read)."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"the connection ended after {len(data)} of {count} bytes")
        data += chunk
    return data


class FramingTests(unittest.TestCase):
    def test_frames_read_in_pieces_of_any_size_come_out_whole_and_in_order(self):
        rng = random.Random(20261203)
        sent = [
            ("side" if rng.random() < 0.3 else "frame", rng.randbytes(rng.choice([0, 1, 5, 300])))
            for _ in range(200)
        ]
        sent.append(("frame", rng.randbytes(200_000)))  # many reads, joined once
        stream = b"".join(
            struct.pack(">I", (SIDE_FRAME if kind == "side" else 0) | len(body)) + body
            for kind, body in sent
        )
        for trial in range(20):
            protocol = Frames()
            connected(protocol)
            position = 0
            while position < len(stream):
                size = rng.choice([1, 2, 3, 4, 7, 100, 4096, 65536])
                protocol.dataReceived(stream[position : position + size])
                position += size
            self.assertEqual(protocol.received, sent, f"trial {trial}")

    def test_what_is_sent_reads_back(self):
        sender, receiver = Frames(), Frames()
        transport = connected(sender)
        connected(receiver)
        sender.send_message(codec.to_wire(append(4)))
        sender.send_side_message(results())
        receiver.dataReceived(transport.value())
        [(kind, frame), (side_kind, side)] = receiver.received
        request = pb.AppendEntriesRequest.FromString(frame)
        self.assertEqual((kind, request), ("frame", codec.to_wire(append(4))))
        self.assertEqual(
            (side_kind, pb.ForwardJobStatusRequest.FromString(side)), ("side", results())
        )

    @defer.inlineCallbacks
    def test_a_frame_is_on_the_wire_before_the_reactor_turn_that_sent_it_ends(self):
        """The other end waits for it: the rest of the turn (applying entries, starting
        jobs) must not hold it back. Here the rest of the turn is a blocking read of it."""
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listener.getsockname()[1])
        sender = yield connectProtocol(endpoint, Frames())
        self.addCleanup(sender.transport.abortConnection)
        listener.settimeout(10)
        other_end, _ = listener.accept()
        self.addCleanup(other_end.close)
        other_end.settimeout(5)
        sender.send_message(codec.to_wire(append(4)))
        (length,) = struct.unpack(">I", read_exactly(other_end, 4))
        frame = read_exactly(other_end, length)
        self.assertEqual(pb.AppendEntriesRequest.FromString(frame), codec.to_wire(append(4)))

    def test_a_frame_over_the_limit_ends_the_connection_and_nothing_after_it_is_read(self):
        protocol = Frames()
        transport = connected(protocol)
        too_long = struct.pack(">I", SIDE_FRAME | (protocol.MAX_LENGTH + 1))
        protocol.dataReceived(too_long + struct.pack(">I", 1) + b"x")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.received, [])

    def test_a_side_frame_ends_the_connection_of_a_protocol_that_takes_none(self):
        protocol = FramedMessages()
        transport = connected(protocol)
        protocol.dataReceived(struct.pack(">I", SIDE_FRAME | 1) + b"x")
        self.assertTrue(transport.disconnecting)
