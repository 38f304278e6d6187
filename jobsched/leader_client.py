"""Calls from a follower to the current leader's client-facing gRPC port.

Used to forward what only the leader answers (cluster status, the Raft log, REST
writes), and by the worker (heartbeats, finished results). Every call is a Deferred.
"""

from __future__ import annotations

import grpc
from twisted.internet import defer

from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api import errors
from jobsched.api.outbound import CallFailed, call_deferred, open_channel
from jobsched.interfaces import IRaftService

# What our own nodes answer with UNAVAILABLE or DEADLINE_EXCEEDED; any other such
# status comes from the link (connection refused, call deadline).
_APPLICATION_MESSAGES = {
    errors.Draining.default_message,
    errors.LeadershipLost.default_message,
    errors.RaftStopped.default_message,
    errors.LeaderUnavailable.default_message,
    errors.StorageFailed.default_message,
    errors.CommitTimeout.default_message,
}


class LeaderUnreachable(errors.JobschedError):
    """A leader is known but the call to it failed (connection, deadline)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503

    def __init__(self, reason: str, leader_address: str) -> None:
        super().__init__(f"Leader request failed: {reason}")
        self.leader_address = leader_address


class LeaderClient:
    """One channel per leader address; calls the leader this node currently knows."""

    def __init__(self, raft: IRaftService, reactor, timeout: float = 5.0) -> None:
        self._raft = raft
        self._reactor = reactor
        self._timeout = timeout
        self._stubs: dict[
            str, tuple[pb_grpc.SchedulerServiceStub, pb_grpc.InternalServiceStub]
        ] = {}
        self._channels: dict[str, grpc.Channel] = {}

    def leader_address(self) -> str:
        """The known leader's client address, or LeaderUnavailable."""
        address = self._raft.status().leader_address
        if not address:
            raise errors.LeaderUnavailable()
        return address

    def scheduler(self, method: str, request, timeout: float = 0) -> defer.Deferred:
        return self._call(0, method, request, timeout)

    def internal(self, method: str, request, timeout: float = 0) -> defer.Deferred:
        return self._call(1, method, request, timeout)

    def _call(self, which: int, method: str, request, timeout: float) -> defer.Deferred:
        try:
            address = self.leader_address()
        except errors.JobschedError as error:
            return defer.fail(error)
        stub = self._stubs_for(address)[which]
        call = call_deferred(
            self._reactor, getattr(stub, method), request, timeout or self._timeout
        )
        return call.addErrback(self._translate, address)

    @staticmethod
    def _translate(failure, address: str):
        failure.trap(CallFailed)
        error = failure.value
        link_failure = error.code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN) or (
            error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            and error.details not in _APPLICATION_MESSAGES
        )
        if link_failure:
            raise LeaderUnreachable(error.details or error.code.name, address)
        raise errors.remote_error(error.code, error.details)

    def _stubs_for(self, address: str):
        stubs = self._stubs.get(address)
        if stubs is None:
            channel = self._channels[address] = open_channel(address)
            stubs = self._stubs[address] = (
                pb_grpc.SchedulerServiceStub(channel),
                pb_grpc.InternalServiceStub(channel),
            )
        return stubs

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()
