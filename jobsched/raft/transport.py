"""GrpcTransport: outbound Raft requests to peers over gRPC, as Deferreds:
AppendEntries on a stream per peer while the gRPC server's loop runs
(raft/append_streams.py), everything else as unary calls."""

from __future__ import annotations

import grpc
from twisted.internet import defer
from zope.interface import implementer

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.interfaces import IRaftTransport
from jobsched.net.channels import Wire
from jobsched.net.outbound import call_deferred
from jobsched.raft import codec, messages
from jobsched.raft.append_streams import AppendStreams

METHOD_BY_REQUEST = {
    messages.VoteRequest: "RequestVote",
    messages.AppendEntriesRequest: "AppendEntries",
    messages.TimeoutNowRequest: "TimeoutNow",
    messages.InstallSnapshotRequest: "InstallSnapshot",
}


RPC_TIMEOUT_SECONDS = 0.5
"""How long a leader waits for a follower's answer to AppendEntries or a vote."""


@implementer(IRaftTransport)
class GrpcTransport:
    """Sends Raft requests to peers over one gRPC channel per peer."""

    def __init__(
        self,
        peers: dict[int, str],
        wire: Wire,
        reactor,
        rpc_timeout: float = RPC_TIMEOUT_SECONDS,
        snapshot_timeout: float = 1.0,
        streams: AppendStreams | None = None,
    ) -> None:
        self._addresses = dict(peers)
        self._wire = wire
        self._reactor = reactor
        self._rpc_timeout = rpc_timeout
        self._snapshot_timeout = snapshot_timeout
        self._streams = streams
        self._stubs: dict[int, pb_grpc.RaftServiceStub] = {}
        self._channels: dict[int, grpc.Channel] = {}

    def _stub(self, peer_id: int) -> pb_grpc.RaftServiceStub:
        stub = self._stubs.get(peer_id)
        if stub is None:
            channel = self._wire.open_channel(self._addresses[peer_id])
            self._channels[peer_id] = channel
            stub = self._stubs[peer_id] = pb_grpc.RaftServiceStub(channel)
        return stub

    def send(self, peer_id: int, request) -> defer.Deferred:
        streams = self._streams
        if (
            streams is not None
            and isinstance(request, messages.AppendEntriesRequest)
            and streams.serves(self._addresses[peer_id])
        ):
            sent = streams.send(self._addresses[peer_id], codec.to_wire(request), self._rpc_timeout)
            return sent.addCallback(codec.from_wire)
        method = getattr(self._stub(peer_id), METHOD_BY_REQUEST[type(request)])
        timeout = (
            self._snapshot_timeout
            if isinstance(request, messages.InstallSnapshotRequest)
            else self._rpc_timeout
        )
        sent = call_deferred(self._reactor, method, codec.to_wire(request), timeout)
        return sent.addCallback(codec.from_wire)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()
