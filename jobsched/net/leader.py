"""Calls from a follower to the current leader's client-facing gRPC port.

The router (jobsched.routing) uses it to forward what only the leader answers and to
deliver worker heartbeats and results. An error the leader answered comes back as the
typed error of its code (jobsched.errors.from_code); a call that failed on the way
becomes LeaderUnreachable.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from twisted.internet import defer
from zope.interface import implementer

from jobsched import errors
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.interfaces import ILeaderClient
from jobsched.net.channels import Wire
from jobsched.net.outbound import CallFailed, call_deferred

DEFAULT_TIMEOUT_SECONDS = 5.0


@implementer(ILeaderClient)
class LeaderClient:
    """One channel per leader address; calls whichever leader `leader_address` names."""

    def __init__(
        self,
        leader_address: Callable[[], str | None],
        wire: Wire,
        reactor,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._leader_address = leader_address
        self._wire = wire
        self._reactor = reactor
        self._timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}

    def scheduler(self, method: str, request, timeout: float = 0) -> defer.Deferred:
        """Call SchedulerService.`method` on the leader."""
        return self._call(pb_grpc.SchedulerServiceStub, method, request, timeout)

    def internal(self, method: str, request, timeout: float = 0) -> defer.Deferred:
        """Call InternalService.`method` on the leader."""
        return self._call(pb_grpc.InternalServiceStub, method, request, timeout)

    def _call(self, stub_type, method: str, request, timeout: float) -> defer.Deferred:
        address = self._leader_address()
        if not address:
            return defer.fail(errors.NoLeader())
        stub = stub_type(self._channel(address))
        call = call_deferred(
            self._reactor, getattr(stub, method), request, timeout or self._timeout
        )
        return call.addErrback(_translate)

    def _channel(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._wire.open_channel(address)
        return channel

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def _translate(failure):
    failure.trap(CallFailed)
    call = failure.value
    if call.error_code is None:
        raise errors.LeaderUnreachable(call.details or call.code.name)
    raise errors.from_code(call.error_code, call.details, call.leader_address)
