"""RaftService over gRPC (inbound): decoded on the gRPC server's event loop, answered by
the node's Raft on the reactor (through the bridge), encoded. AppendEntriesStream
answers a leader's AppendEntries one after the other on one long-lived stream. Every
AppendEntries answer names this node's peer port (api/peer_port.py), where the leader
sends the next ones if it can."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.status import abort_with
from jobsched.errors import JobschedError
from jobsched.interfaces import IRaftService
from jobsched.metrics import NodeMetrics
from jobsched.net.bridge import ReactorBridge
from jobsched.raft import codec
from jobsched.raft.transport import RPC_TIMEOUT_SECONDS

GIVE_UP_FLOOR = RPC_TIMEOUT_SECONDS / 2
"""A stream that ends sooner after its request came was not ended by a leader giving up
on the answer (it waits RPC_TIMEOUT_SECONDS from sending)."""


class RaftServicer(pb_grpc.RaftServiceServicer):
    """RequestVote, AppendEntries (one call each, or a stream of them), TimeoutNow,
    InstallSnapshot."""

    def __init__(
        self,
        raft: IRaftService,
        bridge: ReactorBridge,
        metrics: NodeMetrics | None = None,
        peer_port: Callable[[], int] = lambda: 0,
        give_up_floor: float = GIVE_UP_FLOOR,
    ) -> None:
        self._raft = raft
        self._give_up_floor = give_up_floor
        self._bridge = bridge
        self._metrics = metrics if metrics is not None else NodeMetrics()
        self._peer_port = peer_port

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
        return await self._answer_append(request, context, "grpc_call")

    async def _answer_append(self, request, context, via: str):
        self._metrics.appends_received.labels(via).inc()
        response = await self._answer(request, context)
        response.peer_port = self._peer_port()
        return response

    async def AppendEntriesStream(self, requests, context):
        """Each request answered in order; an error ends the stream with its status.

        A stream that ends (the leader's process died, the network dropped it, the
        leader closed it) tells Raft that its leader disconnected, unless it ends while
        a request has waited for its answer long enough for the leader to have given
        up on this node (a stalled follower, not a leader gone)."""
        clock = asyncio.get_running_loop().time
        sender = None
        answering_since = None
        try:
            async for request in requests:
                sender = (request.leader_id, request.term)
                answering_since = clock()
                response = await self._answer_append(request, context, "grpc_stream")
                answering_since = None
                yield response
        finally:
            owed = clock() - answering_since if answering_since is not None else 0.0
            given_up = owed >= self._give_up_floor
            if sender is not None and not given_up:
                self._bridge.post(self._raft.leader_disconnected, *sender)

    async def TimeoutNow(self, request, context):
        return await self._answer(request, context)

    async def InstallSnapshot(self, request, context):
        return await self._answer(request, context)

    def register(self, server) -> None:
        pb_grpc.add_RaftServiceServicer_to_server(self, server)
