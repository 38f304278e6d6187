"""Outbound gRPC calls as Deferreds.

`stub.Method.future()` runs the call on grpc's own threads; its completion is handed
back to the reactor with `callFromThread`, so no thread is held while a call is in
flight and the Deferred always fires on the reactor (DESIGN.md 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads

from jobsched.net import metadata


class CallFailed(Exception):
    """An outbound call ended with a gRPC status other than OK.

    `error_code` is the jobsched error code the other node sent (trailing metadata), or
    None when the call failed on the way (connection refused, deadline, cancelled).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        error_code: str | None = None,
        leader_address: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.error_code = error_code
        self.leader_address = leader_address

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> CallFailed:
        trailers = dict(error.trailing_metadata() or ())
        return cls(
            error.code(),
            error.details() or "",
            trailers.get(metadata.ERROR_CODE),
            trailers.get(metadata.LEADER_ADDRESS),
        )


def call_deferred(
    reactor: IReactorFromThreads,
    method: Callable,
    request,
    timeout: float,
    metadata: Sequence[tuple[str, str]] = (),
) -> defer.Deferred:
    """Start `method(request)` (with `metadata`, if any) and return a Deferred of its
    response (or CallFailed).

    Cancelling the Deferred cancels the call.
    """
    future = method.future(request, timeout=timeout, metadata=tuple(metadata) or None)
    result = defer.Deferred(lambda _d: future.cancel())

    def settle(done) -> None:
        if result.called:
            return
        if done.cancelled():
            result.errback(CallFailed(grpc.StatusCode.CANCELLED, "cancelled"))
            return
        error = done.exception()
        if error is None:
            result.callback(done.result())
        elif isinstance(error, grpc.RpcError):
            result.errback(CallFailed.from_rpc_error(error))
        else:
            result.errback(CallFailed(grpc.StatusCode.UNKNOWN, str(error)))

    future.add_done_callback(lambda done: reactor.callFromThread(settle, done))
    return result
