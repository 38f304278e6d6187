"""RaftService over gRPC (inbound): decoded, answered by the node's Raft on the
reactor, encoded."""

from __future__ import annotations

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.status import abort_with
from jobsched.errors import JobschedError
from jobsched.interfaces import IRaftService
from jobsched.net.bridge import ReactorBridge
from jobsched.raft import codec


class RaftServicer(pb_grpc.RaftServiceServicer):
    """RequestVote, AppendEntries, TimeoutNow, InstallSnapshot."""

    def __init__(self, raft: IRaftService, bridge: ReactorBridge) -> None:
        self._raft = raft
        self._bridge = bridge

    def _answer(self, request, context):
        try:
            response = self._bridge.on_reactor(self._raft.handle, codec.from_wire(request))
        except JobschedError as error:  # stopped or storage failed: refuse, never acknowledge
            abort_with(context, error)
        return codec.to_wire(response)

    def RequestVote(self, request, context):
        return self._answer(request, context)

    def AppendEntries(self, request, context):
        return self._answer(request, context)

    def TimeoutNow(self, request, context):
        return self._answer(request, context)

    def InstallSnapshot(self, request, context):
        return self._answer(request, context)

    def register(self, server) -> None:
        pb_grpc.add_RaftServiceServicer_to_server(self, server)
