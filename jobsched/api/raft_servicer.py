"""RaftService over gRPC (inbound): decoded on the gRPC server's event loop, answered by
the node's Raft on the reactor (through the bridge), encoded. AppendEntriesStream
answers a leader's AppendEntries one after the other on one long-lived stream."""

from __future__ import annotations

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.status import abort_with
from jobsched.errors import JobschedError
from jobsched.interfaces import IRaftService
from jobsched.metrics import NodeMetrics
from jobsched.net.bridge import ReactorBridge
from jobsched.raft import codec


class RaftServicer(pb_grpc.RaftServiceServicer):
    """RequestVote, AppendEntries (one call each, or a stream of them), TimeoutNow,
    InstallSnapshot."""

    def __init__(
        self, raft: IRaftService, bridge: ReactorBridge, metrics: NodeMetrics | None = None
    ) -> None:
        self._raft = raft
        self._bridge = bridge
        self._metrics = metrics if metrics is not None else NodeMetrics()

    async def _answer(self, request, context):
        try:
            response = await self._bridge.call(self._raft.handle, codec.from_wire(request))
        except JobschedError as error:  # stopped, storage failed or busy: never acknowledge
            method = type(request).__name__.removesuffix("Request")
            self._metrics.rpc_errors.labels(method, error.code).inc()
            await abort_with(context, error)
        return codec.to_wire(response)

    async def RequestVote(self, request, context):
        return await self._answer(request, context)

    async def AppendEntries(self, request, context):
        return await self._answer(request, context)

    async def AppendEntriesStream(self, requests, context):
        """Each request answered in order; an error ends the stream with its status.

        A stream that ends between requests (the leader's process died, the network
        dropped it, the leader closed it) tells Raft that its leader disconnected. One
        that ends while a request waits for its answer does not: that is a leader
        giving up on this node's late answer (this node stalled), not a leader gone."""
        sender = None
        answering = False
        try:
            async for request in requests:
                sender = (request.leader_id, request.term)
                answering = True
                response = await self._answer(request, context)
                answering = False
                yield response
        finally:
            if sender is not None and not answering:
                self._bridge.post(self._raft.leader_disconnected, *sender)

    async def TimeoutNow(self, request, context):
        return await self._answer(request, context)

    async def InstallSnapshot(self, request, context):
        return await self._answer(request, context)

    def register(self, server) -> None:
        pb_grpc.add_RaftServiceServicer_to_server(self, server)
