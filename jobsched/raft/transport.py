"""GrpcTransport: outbound Raft requests to peers over gRPC (grpc.aio), as Deferreds."""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.interfaces import IRaftTransport
from jobsched.net.outbound import AsyncCaller
from jobsched.raft import codec, messages

METHOD_BY_REQUEST = {
    messages.VoteRequest: "RequestVote",
    messages.AppendEntriesRequest: "AppendEntries",
    messages.TimeoutNowRequest: "TimeoutNow",
    messages.InstallSnapshotRequest: "InstallSnapshot",
}


@implementer(IRaftTransport)
class GrpcTransport:
    """Sends Raft requests to peers through the node's AsyncCaller (grpc.aio)."""

    def __init__(
        self,
        peers: dict[int, str],
        caller: AsyncCaller,
        rpc_timeout: float = 0.5,
        snapshot_timeout: float = 1.0,
    ) -> None:
        self._addresses = dict(peers)
        self._caller = caller
        self._rpc_timeout = rpc_timeout
        self._snapshot_timeout = snapshot_timeout

    def send(self, peer_id: int, request) -> defer.Deferred:
        timeout = (
            self._snapshot_timeout
            if isinstance(request, messages.InstallSnapshotRequest)
            else self._rpc_timeout
        )
        sent = self._caller.call(
            self._addresses[peer_id],
            pb_grpc.RaftServiceStub,
            METHOD_BY_REQUEST[type(request)],
            codec.to_wire(request),
            timeout,
        )
        return sent.addCallback(codec.from_wire)

    def close(self) -> None:
        """Nothing to close: the channels belong to the AsyncCaller."""
