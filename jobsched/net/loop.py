"""An asyncio event loop in a thread of its own (the gRPC server runs on it).

The loop is uvloop's (libuv, in C) rather than asyncio's own, whose scheduling runs in
Python: grpc.aio runs every call through the loop, and with uvloop a leader spent 4 to 13 %
less CPU a write (docs/performance.md, eighteenth pass).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop


class Inbox:
    """Callables handed to another thread, delivered in batches: the first one put in
    an empty inbox asks `wake(drain)` to run the whole batch on that thread (one
    wake-up of the other thread per batch, not per callable)."""

    def __init__(self, wake: Callable[[Callable[[], None]], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._items: list[Callable[[], None]] = []

    def put(self, item: Callable[[], None]) -> None:
        with self._lock:
            self._items.append(item)
            first = len(self._items) == 1
        if first:
            self._wake(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for item in items:
            item()


def wake_loop(loop: asyncio.AbstractEventLoop, drain: Callable[[], None]) -> None:
    """`call_soon_threadsafe(drain)`, or nothing once the loop is closed."""
    try:
        loop.call_soon_threadsafe(drain)
    except RuntimeError:
        pass


class EventLoopThread:
    """Starts a uvloop loop in a new thread; coroutines are handed to it with `submit`.

    `stop` ends the loop: tasks still running are cancelled and awaited, async
    generators closed, the loop closed; then `on_exit` runs (in the loop's thread)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._on_exit: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (once started)."""
        return self._loop

    def submit(self, coroutine: Coroutine) -> concurrent.futures.Future:
        """Run `coroutine` on the loop; a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def stop(self, on_exit: Callable[[], None] = lambda: None) -> None:
        """Ask the loop to end; `on_exit` runs in its thread once it has."""
        self._on_exit = on_exit
        self._loop.call_soon_threadsafe(self._loop.stop)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            _finish_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            self._on_exit()


def _finish_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks: set[asyncio.Task[Any]] = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
