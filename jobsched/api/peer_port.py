"""The peer port (inbound): a leader's AppendEntries framed on TCP, or mutual TLS with
`--tls` (net/frames.py), answered in order by the node's Raft on the reactor.

It answers as AppendEntriesStream does on gRPC, at a fraction of the cost: no gRPC
call, event loop or thread hand-off per message (docs/performance.md, "AppendEntries on
the peer port"). The same access rules hold (net/access.py): a request must come from a
configured peer, with TLS from that peer's node certificate; and a request must be
addressed to this node (`to_node_id`: on one host, a port a restarted node left may be
another node's now). Anything else — a frame that does not decode, a refused sender, a
request for another node, a Raft that cannot answer — ends the connection, and the
leader sends its next request on gRPC or a new connection.

A leader that says it takes them (`takes_results`) also gets this node's worker
results back on its connection, as side frames (PeerFrame, net/frames.py): a
delivery costs a frame each way instead of a ForwardJobStatus call. The router sends
them here when the connection is its current leader's (`send_results`), else on gRPC.
"""

from __future__ import annotations

import itertools
from collections import deque

from google.protobuf.message import DecodeError
from twisted.application.service import Service
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from zope.interface import implementer

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.raft_servicer import GIVE_UP_FLOOR
from jobsched.errors import JobschedError
from jobsched.interfaces import IApiServer, IClusterAPI, IPeerResults, IRaftService
from jobsched.metrics import NodeMetrics
from jobsched.net.access import INTERNAL, RAFT, AccessPolicy, Caller
from jobsched.net.frames import FramedMessages
from jobsched.net.server import PortUnavailable
from jobsched.raft import codec

METHOD = RAFT + "AppendEntriesStream"
"""The access rule the peer port follows: the stream's."""
RESULTS_METHOD = INTERNAL + "ForwardJobStatus"
"""The access rule of results that come on a leader's peer-port connection."""
log = Logger()


def results_taker(api: IClusterAPI, access: AccessPolicy, metrics: NodeMetrics):
    """What a leader does with worker results a follower sends back on its peer-port
    connection (raft/peer_links.py): ForwardJobStatus's access rule and commit."""

    def take(caller: Caller, request: pb.ForwardJobStatusRequest) -> defer.Deferred:
        try:
            access.check(RESULTS_METHOD, caller, request)
        except JobschedError as refused:
            metrics.rpc_errors.labels("ForwardJobStatus", refused.code).inc()
            raise
        metrics.results_received.labels("peer_port").inc()
        return api.accept_results(request.updates)

    return take


@implementer(IApiServer, IPeerResults)
class PeerPortService(Service):
    """Listens on `host:port` (0: a free port) while running; `port` is the port
    bound (0 when not listening), `advertised_port` what this node's AppendEntries
    answers name to the leader: `advertise` if given, else `port`."""

    port = 0

    def __init__(
        self,
        raft: IRaftService,
        access: AccessPolicy,
        wire,
        reactor,
        host: str,
        port: int,
        metrics: NodeMetrics | None = None,
        advertise: int = 0,
    ) -> None:
        self._wire = wire
        self._advertise = advertise
        self._reactor = reactor
        self._host = host
        self._wanted = port
        self._factory = _PeerPortFactory(raft, access, reactor, metrics or NodeMetrics(), self)
        self._listening = None

    @property
    def advertised_port(self) -> int:
        return (self._advertise or self.port) if self.port else 0

    def startService(self) -> None:
        """Bind, or raise PortUnavailable."""
        super().startService()
        try:
            self._listening = self._wire.listen_peers(
                self._reactor, self._wanted, self._factory, self._host
            )
        except error.CannotListenError:
            raise PortUnavailable(
                f"cannot bind --peer-port {self._wanted} on {self._host} "
                "(in use, or not an address of this host)"
            ) from None
        self.port = self._listening.getHost().port
        log.info(
            "Peer port {port} on {host} ({kind}): the leader sends this node its log there",
            port=self.port,
            host=self._host,
            kind="mutual TLS" if self._wire.secure else "TCP",
        )

    def send_results(self, request: pb.ForwardJobStatusRequest, timeout: float):
        """Deliver worker results to the current leader on its connection: a Deferred
        that fires once they are committed (or fails with the leader's typed error, or
        LeaderUnreachable); None when the leader has no connection here that takes
        them."""
        status = self._factory.raft.status()
        current = (status.leader_id, status.current_term)
        for connection in self._factory.connections:
            if connection.takes_results_from(current):
                return connection.send_results(request, timeout)
        return None

    def stopService(self) -> defer.Deferred | None:
        super().stopService()
        self.port = 0
        self._factory.close_all()
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None


class _PeerPortFactory(protocol.ServerFactory):
    def __init__(self, raft, access, reactor, metrics, service: PeerPortService) -> None:
        self.raft = raft
        self.access = access
        self.reactor = reactor
        self.metrics = metrics
        self.received = metrics.appends_received.labels("peer_port")
        self.service = service
        self.closing = False
        self.connections: set[_LeaderConnection] = set()

    def buildProtocol(self, addr) -> _LeaderConnection:
        return _LeaderConnection(self)

    def close_all(self) -> None:
        """End every connection; a node that stops does not count its own ending as
        its leader leaving."""
        self.closing = True
        for connection in list(self.connections):
            connection.abort()


class _LeaderConnection(FramedMessages):
    """One leader's connection: requests answered one at a time, in order."""

    def __init__(self, factory: _PeerPortFactory) -> None:
        super().__init__()
        self._factory = factory
        self._frames: deque[bytes] = deque()
        self._open = True
        self._sender: tuple[int, int] | None = None
        self._answering_since: float | None = None
        self._answering_in_turn = False
        self._takes_results = False
        self._call_ids = itertools.count(1)
        self._calls: dict[int, tuple[defer.Deferred, object]] = {}

    def connectionMade(self) -> None:
        super().connectionMade()
        self._factory.connections.add(self)

    def frame_received(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._answer_waiting()

    def _answer_waiting(self) -> None:
        """Answer the frames waiting, one at a time; a loop, not a recursion, when Raft
        answers at once."""
        if self._answering_in_turn:
            return
        self._answering_in_turn = True
        try:
            while self._frames and self._open and self._answering_since is None:
                self._answer_one(self._frames.popleft())
        finally:
            self._answering_in_turn = False

    def _answer_one(self, frame: bytes) -> None:
        factory = self._factory
        try:
            request = pb.AppendEntriesRequest.FromString(frame)
            factory.access.check(METHOD, self.caller(), request)
            decoded = codec.from_wire(request)
        except DecodeError:
            self._refuse("INVALID_ARGUMENT")
            return
        except JobschedError as refused:
            self._refuse(refused.code)
            return
        if request.to_node_id != factory.raft.node_id:
            self._refuse("FAILED_PRECONDITION")  # meant for a node that had this port
            return
        self._sender = (request.leader_id, request.term)
        self._takes_results = request.takes_results
        self._answering_since = factory.reactor.seconds()
        factory.received.inc()
        answered = defer.maybeDeferred(factory.raft.handle, decoded)
        answered.addCallbacks(self._answer, self._cannot_answer)

    def _answer(self, response) -> None:
        if not self._open:
            return
        self._answering_since = None
        answer = codec.to_wire(response)
        answer.peer_port = self._factory.service.advertised_port
        self.send_message(answer)
        self._answer_waiting()

    def _cannot_answer(self, failure) -> None:
        """Stopped, storage failed or busy: never acknowledge; end the connection."""
        if failure.check(JobschedError):
            self._refuse(failure.value.code)
        else:
            log.failure("Peer port: AppendEntries failed", failure)
            self._refuse("INTERNAL")

    def _refuse(self, code: str) -> None:
        self._open = False
        self._factory.metrics.rpc_errors.labels("AppendEntries", code).inc()
        self.abort()

    # ------------------------------------------------------------------ results

    def takes_results_from(self, leader: tuple[int, int]) -> bool:
        """Whether this is the connection of `leader` (id, term) and it takes results."""
        return self._open and self._takes_results and self._sender == leader

    def send_results(self, request: pb.ForwardJobStatusRequest, timeout: float):
        call_id = next(self._call_ids)
        answered = defer.Deferred()
        expiry = self._factory.reactor.callLater(timeout, self._call_expired, call_id)
        self._calls[call_id] = (answered, expiry)
        self.send_side_message(pb.PeerFrame(call_id=call_id, results=request))
        return answered

    def side_frame_received(self, frame: bytes) -> None:
        """The leader's answer to a delivery (one that timed out is ignored); a side
        frame before any request was accepted ends the connection."""
        if self._sender is None:
            self._refuse("PERMISSION_DENIED")
            return
        try:
            answer = pb.PeerFrame.FromString(frame)
        except DecodeError:
            self._refuse("INVALID_ARGUMENT")
            return
        call = self._calls.pop(answer.call_id, None)
        if call is None:
            return
        answered, expiry = call
        expiry.cancel()
        if answer.accepted:
            answered.callback(pb.ForwardJobStatusResponse())
        else:
            answered.errback(errors.from_code(answer.error_code, answer.error_message))

    def _call_expired(self, call_id: int) -> None:
        answered, _expiry = self._calls.pop(call_id)
        answered.errback(errors.LeaderUnreachable("no answer on the peer port in time"))

    def _fail_calls(self) -> None:
        calls, self._calls = self._calls, {}
        for answered, expiry in calls.values():
            expiry.cancel()
            answered.errback(errors.LeaderUnreachable("the leader's peer-port connection ended"))

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        """A leader's connection that ends tells Raft its leader disconnected, as a
        gRPC stream's end does (api/raft_servicer.py), unless an answer had been owed
        long enough for the leader to have given up on this node."""
        super().connectionLost(reason)
        factory = self._factory
        self._open = False
        factory.connections.discard(self)
        self._fail_calls()
        since = self._answering_since
        given_up = since is not None and factory.reactor.seconds() - since >= GIVE_UP_FLOOR
        if self._sender is not None and not given_up and not factory.closing:
            factory.raft.leader_disconnected(*self._sender)
