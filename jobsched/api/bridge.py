"""Hops from gRPC's handler threads onto the reactor thread.

gRPC runs servicer methods in its own thread pool; state lives on the reactor. A
handler calls `on_reactor(fn, ...)`, which runs `fn` on the reactor thread and waits
for its result (a value or a Deferred). Calling it *on* the reactor would deadlock
(STACK-NOTES pitfall 2), so that is refused loudly.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import threadable


class ReactorBridge:
    """Runs callables on one reactor from other threads."""

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor

    def on_reactor(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn(*args, **kwargs) on the reactor and return its (awaited) result."""
        if threadable.isInIOThread():
            raise RuntimeError("on_reactor called on the reactor thread: it would deadlock")
        return threads.blockingCallFromThread(
            self._reactor, defer.maybeDeferred, fn, *args, **kwargs
        )
