"""Outbound gRPC calls as Deferreds.

The node's own calls go through `AsyncCaller` (grpc.aio on a loop thread of its own).
`call_deferred` is the simple form for a synchronous stub (tests, scripts):
`stub.Method.future()` runs the call on grpc's own threads and its completion is handed
back to the reactor with `callFromThread`. Either way no thread is held while a call is
in flight and the Deferred always fires on the reactor (DESIGN.md 2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial

import grpc
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads

from jobsched.net import metadata
from jobsched.net.loop import EventLoopThread, Inbox, wake_loop


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


class AsyncCaller(Service):
    """The node's outbound unary calls (Raft, forwarding, results, heartbeats), made
    by `grpc.aio` on an event loop of its own; each call's Deferred fires on the
    reactor.

    Unlike `.future()` on a synchronous channel, which starts a "channel spin" thread
    whenever the calls in flight go from 0 to 1 (STACK-NOTES pitfall 12), a call here
    is a coroutine on one long-lived loop. Calls started in one reactor turn reach the
    loop in one hand-off, and answers come back in batches too (`net.loop.Inbox`).
    """

    def __init__(self, reactor, wire, name: str = "grpc-client") -> None:
        self._reactor = reactor
        self._wire = wire
        self._name = name
        self._thread: EventLoopThread | None = None
        self._to_loop: Inbox | None = None
        self._to_reactor = Inbox(lambda drain: reactor.callFromThread(drain))
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, type], object] = {}

    def startService(self) -> None:
        super().startService()
        self._thread = EventLoopThread(self._name)
        self._thread.start()
        self._to_loop = Inbox(partial(wake_loop, self._thread.loop))

    def stopService(self) -> defer.Deferred | None:
        """Close the channels (calls in flight fail) and end the loop's thread."""
        super().stopService()
        thread, self._thread = self._thread, None
        if thread is None:
            return None
        stopped = defer.Deferred()

        def finished() -> None:
            thread.join()
            stopped.callback(None)

        async def close_channels() -> None:
            channels, self._channels = list(self._channels.values()), {}
            self._stubs.clear()
            for channel in channels:
                await channel.close()

        thread.submit(close_channels()).add_done_callback(
            lambda _f: thread.stop(on_exit=lambda: self._reactor.callFromThread(finished))
        )
        return stopped

    def call(self, address: str, stub_type, method: str, request, timeout: float):
        """`stub_type(channel to address).method(request)`: a Deferred of the response
        or of a CallFailed. Cancelling the Deferred cancels the call."""
        if self._thread is None:
            return defer.fail(CallFailed(grpc.StatusCode.UNAVAILABLE, "the node is stopping"))
        state: dict = {"task": None, "cancelled": False}
        result = defer.Deferred(lambda _d: self._to_loop.put(partial(_cancel, state)))

        def start() -> None:  # on the loop
            if state["cancelled"]:
                return
            stub = self._stub(address, stub_type)
            task = asyncio.ensure_future(getattr(stub, method)(request, timeout=timeout))
            state["task"] = task
            task.add_done_callback(lambda t: self._to_reactor.put(partial(_settle, result, t)))

        self._to_loop.put(start)
        return result

    def _stub(self, address: str, stub_type):
        stub = self._stubs.get((address, stub_type))
        if stub is None:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = self._wire.open_aio_channel(address)
            stub = self._stubs[(address, stub_type)] = stub_type(channel)
        return stub


def _cancel(state: dict) -> None:
    state["cancelled"] = True
    if state["task"] is not None:
        state["task"].cancel()


def _settle(result: defer.Deferred, task: asyncio.Future) -> None:
    if result.called:
        return
    if task.cancelled():
        result.errback(CallFailed(grpc.StatusCode.CANCELLED, "cancelled"))
        return
    error = task.exception()
    if error is None:
        result.callback(task.result())
    elif isinstance(error, grpc.RpcError):
        result.errback(CallFailed.from_rpc_error(error))
    else:
        result.errback(CallFailed(grpc.StatusCode.UNKNOWN, str(error)))
