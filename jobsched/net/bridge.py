"""Hops from the gRPC server's event loop onto the reactor thread, and back.

The gRPC server runs `grpc.aio` on an asyncio loop in a thread of its own; state lives
on the reactor. A handler awaits `bridge.call(fn, ...)`: `fn` runs on the reactor (it
may return a value or a Deferred) and the coroutine resumes with its result on the
loop, so no thread waits meanwhile. Every hop has a deadline: when it passes, the
Deferred on the reactor is cancelled and the caller gets NodeBusy. A coroutine
cancelled while it waits (the client went away) cancels the Deferred too.

Awaiting a hop *on* the reactor thread could never finish (STACK-NOTES pitfall 2), so
that is refused loudly.

Hops travel in batches: the calls a loop turn starts reach the reactor with one
`callFromThread` (one wake-up of the reactor), and the results a reactor turn produces
reach the loop with one `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet import defer
from twisted.python import threadable
from twisted.python.failure import Failure

from jobsched.errors import NodeBusy
from jobsched.net.loop import Inbox, wake_loop

DEFAULT_HOP_SECONDS = 30.0
"""Deadline of a hop whose operation has no longer one of its own."""


class ReactorBridge:
    """Runs callables on one reactor for coroutines on another thread's event loop."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._to_reactor = Inbox(reactor.callFromThread)
        self._to_loops: dict[asyncio.AbstractEventLoop, Inbox] = {}

    async def call(
        self, fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_HOP_SECONDS
    ) -> Any:
        """fn(*args) on the reactor; its value (or its Deferred's result), or its error.

        Raises NodeBusy when no result came within `timeout` seconds (the Deferred is
        cancelled) and RuntimeError when awaited on the reactor thread."""
        if threadable.isInIOThread():
            raise RuntimeError("bridge.call awaited on the reactor thread: it would deadlock")
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future = loop.create_future()
        hop = _Hop(self._reactor, fn, args, timeout, self._inbox_of(loop), outcome)
        self._to_reactor.put(hop.run)
        try:
            result = await outcome
        except asyncio.CancelledError:
            self._to_reactor.put(hop.cancel)
            raise
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on the reactor, soon; nothing waits for it (any thread)."""
        self._to_reactor.put(partial(fn, *args))

    def _inbox_of(self, loop: asyncio.AbstractEventLoop) -> Inbox:
        inbox = self._to_loops.get(loop)
        if inbox is None:
            inbox = self._to_loops[loop] = Inbox(partial(wake_loop, loop))
        return inbox


class _Hop:
    """One call's life on the reactor: run, time out, hand the result to the loop."""

    def __init__(self, reactor, fn, args, timeout, loop_inbox: Inbox, outcome) -> None:
        self._reactor = reactor
        self._fn = fn
        self._args = args
        self._timeout = timeout
        self._loop_inbox = loop_inbox
        self._outcome = outcome
        self._running: defer.Deferred | None = None
        self._timer = None
        self._expired = False

    def run(self) -> None:
        self._running = defer.maybeDeferred(self._fn, *self._args)
        if not self._running.called:
            self._timer = self._reactor.callLater(self._timeout, self._expire)
        self._running.addBoth(self._settle)

    def cancel(self) -> None:
        if self._running is not None and not self._running.called:
            self._running.cancel()

    def _expire(self) -> None:
        self._timer = None
        self._expired = True
        self._running.cancel()

    def _settle(self, result: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._expired:
            result = Failure(NodeBusy())
        self._loop_inbox.put(partial(_resolve, self._outcome, result))


def _resolve(outcome: asyncio.Future, result: Any) -> None:
    if not outcome.done():
        outcome.set_result(result)
