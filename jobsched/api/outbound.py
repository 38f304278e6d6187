"""Outbound gRPC calls as Deferreds.

`stub.Method.future()` runs the call on grpc's own threads; its completion is handed
back to the reactor with `callFromThread`, so no thread is held while a call is in
flight and the Deferred always fires on the reactor (DESIGN.md 2).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class CallFailed(Exception):
    """An outbound call ended with a gRPC status other than OK."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def open_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def call_deferred(
    reactor: IReactorFromThreads, method: Callable, request, timeout: float
) -> defer.Deferred:
    """Start `method(request)` and return a Deferred of its response (or CallFailed).

    Cancelling the Deferred cancels the call.
    """
    future = method.future(request, timeout=timeout)
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
            result.errback(CallFailed(error.code(), error.details() or ""))
        else:
            result.errback(CallFailed(grpc.StatusCode.UNKNOWN, str(error)))

    future.add_done_callback(lambda done: reactor.callFromThread(settle, done))
    return result
