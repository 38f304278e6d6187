"""AppendEntries to peers on their peer ports: the leader's side of api/peer_port.py.

A peer's AppendEntries answers name its peer port; from then on its AppendEntries go
there, framed on one TCP (or mutual TLS) connection per peer, written and read on the
reactor: no gRPC call, event loop or thread hand-off per message. Answers come in
order and are matched to requests first in, first out. A request not answered within
its timeout fails and ends the connection (the next request opens another); a
connection that ends fails every request still on it. When the peer's end closes (it
stopped or restarted, perhaps on another port) its next AppendEntries go on gRPC, whose
answer names its port again; a port that cannot be reached, or a connection the peer
ends before its first answer, sends them to gRPC for RETRY_SECONDS, unless its answers
name another port.

Once the node takes them (`take_results`), its requests say so (`takes_results`) and
a follower may send its worker results back on the connection as side frames
(PeerFrame); each is answered, by call id, once the handler's commit is done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import grpc
from google.protobuf.message import DecodeError
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jobsched._proto import scheduler_pb2 as pb
from jobsched.errors import JobschedError
from jobsched.interfaces import IPeerLinks
from jobsched.net.frames import FramedMessages
from jobsched.net.outbound import CallFailed
from jobsched.raft.append_streams import Outstanding

RETRY_SECONDS = 60.0
CONNECT_SECONDS = 1.0
log = Logger()


@implementer(IPeerLinks)
class PeerLinks:
    """This node's connections to its peers' peer ports, by peer id."""

    def __init__(
        self,
        reactor,
        wire,
        hosts: Mapping[int, str],
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._reactor = reactor
        self._wire = wire
        self._hosts = dict(hosts)
        self._retry_seconds = retry_seconds
        self._ports: dict[int, int] = {}
        self._refused: dict[int, tuple[int, float]] = {}  # id -> (port, until)
        self._links: dict[int, _Link] = {}
        self._results = None

    def take_results(self, handler) -> None:
        """Take followers' worker results on the links: `handler(caller, request)`."""
        self._results = handler

    def learn_port(self, peer_id: int, port: int) -> None:
        """What an answer of `peer_id` said its peer port is (0: it has none)."""
        known = self._ports.get(peer_id)
        if port == known:
            return
        refused_port, until = self._refused.get(peer_id, (0, 0.0))
        if port and port == refused_port and self._reactor.seconds() < until:
            return
        self._end_link(peer_id)  # to a port it no longer has: it restarted
        if port:
            self._ports[peer_id] = port
        else:
            self._ports.pop(peer_id, None)

    def serves(self, peer_id: int) -> bool:
        """Whether AppendEntries to `peer_id` go on its peer port."""
        return peer_id in self._ports

    def send(self, peer_id: int, request: pb.AppendEntriesRequest, timeout: float):
        """A Deferred of the answer (pb.AppendEntriesResponse) or of a CallFailed;
        `request` is addressed to `peer_id` (its `to_node_id`)."""
        link = self._links.get(peer_id)
        if link is None or link.ended:
            port = self._ports[peer_id]
            link = self._links[peer_id] = _Link(peer_id, port, self._lost, self._results)
            self._wire.connect_peer(
                self._reactor, self._hosts[peer_id], port, link, CONNECT_SECONDS
            )
        request.to_node_id = peer_id
        request.takes_results = link.results is not None
        outstanding = Outstanding(self._reactor, timeout, link.expired)
        link.write(request, outstanding)
        return outstanding.deferred

    def close(self) -> None:
        for peer_id in list(self._links):
            self._end_link(peer_id)

    def _end_link(self, peer_id: int) -> None:
        link = self._links.pop(peer_id, None)
        if link is not None:
            link.end()

    def _lost(self, link: _Link, answered: bool) -> None:
        """The peer (or the network) ended a link: its next AppendEntries go on gRPC,
        whose answer names its port again — at once if this one answered before (the
        peer may have restarted on another port), after RETRY_SECONDS if not."""
        if self._ports.get(link.peer_id) == link.port:
            del self._ports[link.peer_id]
        if not answered:
            until = self._reactor.seconds() + self._retry_seconds
            self._refused[link.peer_id] = (link.port, until)


class _Link(protocol.ClientFactory):
    """One connection to a peer's peer port, and the requests waiting on it."""

    noisy = False

    def __init__(self, peer_id: int, port: int, on_lost, results=None) -> None:
        self.peer_id = peer_id
        self.port = port
        self.results = results
        self.ended = False
        self._on_lost = on_lost
        self._connector = None
        self._connection: _LinkProtocol | None = None
        self._unsent: list[pb.AppendEntriesRequest] = []
        self._waiting: deque[Outstanding] = deque()
        self._answered = False
        self._ended_here = False

    def write(self, request: pb.AppendEntriesRequest, outstanding: Outstanding) -> None:
        self._waiting.append(outstanding)
        if self._connection is not None:
            self._connection.send_message(request)
        else:
            self._unsent.append(request)

    def expired(self, outstanding: Outstanding) -> None:
        if outstanding in self._waiting:
            self._waiting.remove(outstanding)  # it fails as expired; the others with the link
            self.end()

    def end(self) -> None:
        """Close the connection; the requests still waiting fail."""
        if self.ended:
            return
        self._ended_here = True
        if self._connection is not None:
            self._connection.abort()
        elif self._connector is not None:
            self._connector.stopConnecting()
        self._failed(Failure(CallFailed(grpc.StatusCode.CANCELLED, "peer link closed")))

    # ------------------------------------------------------------------ the connection

    def startedConnecting(self, connector) -> None:
        self._connector = connector

    def buildProtocol(self, addr) -> _LinkProtocol:
        return _LinkProtocol(self)

    def connected(self, connection: _LinkProtocol) -> None:
        if self.ended:
            connection.abort()
            return
        self._connection = connection
        unsent, self._unsent = self._unsent, []
        for request in unsent:
            connection.send_message(request)

    def answered(self, frame: bytes) -> None:
        self._answered = True
        if self._waiting:
            self._waiting.popleft().settle(pb.AppendEntriesResponse.FromString(frame))

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        self._failed(reason)

    def clientConnectionLost(self, connector, reason: Failure) -> None:
        self._failed(reason)

    def _failed(self, reason: Failure) -> None:
        if self.ended:
            return
        self.ended = True
        self._connection = None
        if not self._ended_here:
            self._on_lost(self, self._answered)
        if isinstance(reason.value, CallFailed):
            failure = reason.value
        else:
            message = f"peer port {self.port}: {reason.getErrorMessage()}"
            failure = CallFailed(grpc.StatusCode.UNAVAILABLE, message)
        while self._waiting:
            self._waiting.popleft().settle(failure)


class _LinkProtocol(FramedMessages):
    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link

    def connectionMade(self) -> None:
        super().connectionMade()
        self._link.connected(self)

    def frame_received(self, frame: bytes) -> None:
        try:
            self._link.answered(frame)
        except DecodeError:
            self.abort()

    def side_frame_received(self, frame: bytes) -> None:
        """A follower's worker results: taken as a ForwardJobStatus call from that peer
        would be, and answered by call id once committed (or with the typed error)."""
        take = self._link.results
        try:
            call = pb.PeerFrame.FromString(frame)
        except DecodeError:
            call = None
        if take is None or call is None or not call.HasField("results"):
            self.abort()
            return
        taken = defer.maybeDeferred(take, self.caller(), call.results)
        taken.addCallbacks(self._accepted, self._refused, (call.call_id,), None, (call.call_id,))

    def _accepted(self, _committed, call_id: int) -> None:
        self.send_side_message(pb.PeerFrame(call_id=call_id, accepted=True))

    def _refused(self, failure: Failure, call_id: int) -> None:
        if failure.check(JobschedError):
            code, message = failure.value.code, failure.value.message
        else:
            log.failure(
                "Peer port: results from node {peer} failed", failure, peer=self._link.peer_id
            )
            code, message = "INTERNAL", "internal error"
        self.send_side_message(
            pb.PeerFrame(call_id=call_id, error_code=code, error_message=message)
        )
