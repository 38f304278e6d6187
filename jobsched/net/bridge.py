"""Hops from gRPC's handler threads onto the reactor thread.

gRPC runs servicer methods in its own thread pool; state lives on the reactor. A
handler calls `on_reactor(fn, ...)`, which runs `fn` on the reactor thread and waits
for its result (a value or a Deferred). Calling it *on* the reactor would deadlock
(STACK-NOTES pitfall 2), so that is refused loudly.

This is `threads.blockingCallFromThread` with a bare lock for the wait instead of a
Queue (a Condition, a lock and a deque per call): every request makes one hop, and
the difference is visible in the leader's CPU per submit (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import threadable
from twisted.python.failure import Failure


class ReactorBridge:
    """Runs callables on one reactor from other threads."""

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor

    def on_reactor(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn(*args, **kwargs) on the reactor and return its (awaited) result."""
        if threadable.isInIOThread():
            raise RuntimeError("on_reactor called on the reactor thread: it would deadlock")
        done = threading.Lock()
        done.acquire()
        outcome = []

        def settle(result: Any) -> None:
            outcome.append(result)
            done.release()

        def run() -> None:
            defer.maybeDeferred(fn, *args, **kwargs).addBoth(settle)

        self._reactor.callFromThread(run)
        done.acquire()
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result
