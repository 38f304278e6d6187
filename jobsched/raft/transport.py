"""Raft over gRPC: outbound calls as Deferreds (GrpcTransport) and the inbound servicer.

Outbound calls use the stub's `.future()`; completion is handed back to the reactor with
`callFromThread`, so no thread is held while a call is in flight (DESIGN.md 2).
"""

from __future__ import annotations

from typing import Dict

import grpc
from twisted.internet import defer
from zope.interface import implementer

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.bridge import ReactorBridge
from jobsched.interfaces import IRaftTransport
from jobsched.raft import codec, messages

METHOD_BY_REQUEST = {
    messages.VoteRequest: "RequestVote",
    messages.AppendEntriesRequest: "AppendEntries",
    messages.TimeoutNowRequest: "TimeoutNow",
    messages.InstallSnapshotRequest: "InstallSnapshot",
}
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class PeerUnreachable(Exception):
    """A Raft RPC to a peer failed or timed out."""


@implementer(IRaftTransport)
class GrpcTransport:
    """Sends Raft requests to peers over one gRPC channel per peer."""

    def __init__(
        self,
        peers: Dict[int, str],
        reactor,
        rpc_timeout: float = 0.5,
        snapshot_timeout: float = 1.0,
    ) -> None:
        self._addresses = dict(peers)
        self._reactor = reactor
        self._rpc_timeout = rpc_timeout
        self._snapshot_timeout = snapshot_timeout
        self._stubs: Dict[int, pb_grpc.RaftServiceStub] = {}
        self._channels: Dict[int, grpc.Channel] = {}

    def _stub(self, peer_id: int) -> pb_grpc.RaftServiceStub:
        stub = self._stubs.get(peer_id)
        if stub is None:
            channel = grpc.insecure_channel(self._addresses[peer_id], options=CHANNEL_OPTIONS)
            self._channels[peer_id] = channel
            stub = self._stubs[peer_id] = pb_grpc.RaftServiceStub(channel)
        return stub

    def send(self, peer_id: int, request) -> defer.Deferred:
        method = getattr(self._stub(peer_id), METHOD_BY_REQUEST[type(request)])
        timeout = (
            self._snapshot_timeout
            if isinstance(request, messages.InstallSnapshotRequest)
            else self._rpc_timeout
        )
        future = method.future(codec.to_wire(request), timeout=timeout)
        result = defer.Deferred(lambda _d: future.cancel())
        future.add_done_callback(
            lambda done: self._reactor.callFromThread(self._settle, result, done)
        )
        return result

    @staticmethod
    def _settle(result: defer.Deferred, future) -> None:
        if result.called:
            return
        if future.cancelled():
            result.errback(PeerUnreachable("cancelled"))
            return
        error = future.exception()
        if error is not None:
            result.errback(PeerUnreachable(str(error.code()) if hasattr(error, "code") else str(error)))
            return
        result.callback(codec.from_wire(future.result()))

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()


class RaftServicer(pb_grpc.RaftServiceServicer):
    """Inbound Raft RPCs: decoded, answered by RaftService on the reactor, encoded."""

    def __init__(self, raft, bridge: ReactorBridge) -> None:
        self._raft = raft
        self._bridge = bridge

    def _answer(self, request):
        return codec.to_wire(self._bridge.on_reactor(self._raft.handle, codec.from_wire(request)))

    def RequestVote(self, request, context):
        return self._answer(request)

    def AppendEntries(self, request, context):
        return self._answer(request)

    def TimeoutNow(self, request, context):
        return self._answer(request)

    def InstallSnapshot(self, request, context):
        return self._answer(request)
