"""Calls from a follower to the current leader's client-facing gRPC port.

The router (jobsched.routing) uses it to forward what only the leader answers and to
deliver worker heartbeats and results. An error the leader answered comes back as the
typed error of its code (jobsched.errors.from_code); a call that failed on the way
becomes LeaderUnreachable.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from zope.interface import implementer

from jobsched import errors
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.interfaces import ILeaderClient
from jobsched.net.outbound import AsyncCaller, CallFailed

DEFAULT_TIMEOUT_SECONDS = 5.0


@implementer(ILeaderClient)
class LeaderClient:
    """Calls whichever leader `leader_address` names, through the node's AsyncCaller."""

    def __init__(
        self,
        leader_address: Callable[[], str | None],
        caller: AsyncCaller,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._leader_address = leader_address
        self._caller = caller
        self._timeout = timeout

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
        call = self._caller.call(address, stub_type, method, request, timeout or self._timeout)
        return call.addErrback(_translate)

    def close(self) -> None:
        """Nothing to close: the channels belong to the AsyncCaller."""


def _translate(failure):
    failure.trap(CallFailed)
    call = failure.value
    if call.error_code is None:
        raise errors.LeaderUnreachable(call.details or call.code.name)
    raise errors.from_code(call.error_code, call.details, call.leader_address)
