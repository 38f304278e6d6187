"""GrpcTransport: outbound Raft requests to peers, as Deferreds. AppendEntries go on a
peer's peer port once its answers name one (raft/peer_links.py), else on a gRPC stream
per peer while the gRPC server's loop runs (raft/append_streams.py); everything else
goes as unary gRPC calls."""

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
from jobsched.raft.peer_links import PeerLinks

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
        links: PeerLinks | None = None,
    ) -> None:
        self._addresses = dict(peers)
        self._wire = wire
        self._reactor = reactor
        self._rpc_timeout = rpc_timeout
        self._snapshot_timeout = snapshot_timeout
        self._streams = streams
        self._links = links
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
        if isinstance(request, messages.AppendEntriesRequest):
            return self._send_append(peer_id, codec.to_wire(request))
        method = getattr(self._stub(peer_id), METHOD_BY_REQUEST[type(request)])
        timeout = (
            self._snapshot_timeout
            if isinstance(request, messages.InstallSnapshotRequest)
            else self._rpc_timeout
        )
        sent = call_deferred(self._reactor, method, codec.to_wire(request), timeout)
        return sent.addCallback(codec.from_wire)

    def _send_append(self, peer_id: int, request) -> defer.Deferred:
        address = self._addresses[peer_id]
        links, streams = self._links, self._streams
        if links is not None and links.serves(peer_id):
            sent = links.send(peer_id, request, self._rpc_timeout)
        elif streams is not None and streams.serves(address):
            sent = streams.send(address, request, self._rpc_timeout)
        else:
            method = self._stub(peer_id).AppendEntries
            sent = call_deferred(self._reactor, method, request, self._rpc_timeout)
        if links is not None:
            sent.addCallback(self._learn_port, peer_id)
        return sent.addCallback(codec.from_wire)

    def _learn_port(self, response, peer_id: int):
        self._links.learn_port(peer_id, response.peer_port)
        return response

    def close(self) -> None:
        if self._links is not None:
            self._links.close()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()
