"""JobDescriptors: the descriptors of an executor's running jobs (their pipes and
pidfds), watched through an epoll of their own that the reactor watches as one reader.

A job's three descriptors then cost the reactor no registration and no dispatch of
their own: the reactor's epoll reports this one, and a single `doRead` handles every
job descriptor ready then (docs/performance.md, "The keeper's wake-ups, job
descriptors behind one epoll, the collector").
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

OnRead = Callable[[int], bool]

log = Logger()


@implementer(IReadDescriptor)
class JobDescriptors:
    """Calls `on_read(fd)` whenever a watched `fd` is readable or hung up; once it
    returns True the fd is done: no longer watched, and closed. The reactor watches
    this only while it watches something, so an idle executor leaves it clean."""

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._epoll = select.epoll()
        self._handlers: dict[int, OnRead] = {}
        self._added = False

    def __len__(self) -> int:
        return len(self._handlers)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def logPrefix(self) -> str:
        return "jobs"

    def watch(self, fd: int, on_read: OnRead) -> None:
        """Watch `fd` (which this now owns) until `on_read` says it is done."""
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = on_read
        if not self._added:
            self._added = True
            self._reactor.addReader(self)

    def doRead(self) -> None:
        for fd, _events in self._epoll.poll(0):
            on_read = self._handlers.get(fd)
            if on_read is None:
                continue
            try:
                done = on_read(fd)
            except Exception:  # one job's failure must not stop the others' watching
                log.failure("Watching a job's descriptor {fd} failed; closing it", fd=fd)
                done = True
            if done:
                self._close(fd)
        if not self._handlers and self._added:
            self._added = False
            self._reactor.removeReader(self)

    def connectionLost(self, reason) -> None:
        """The reactor dropped this reader (it is shutting down)."""
        self._added = False

    def _close(self, fd: int) -> None:
        del self._handlers[fd]
        self._epoll.unregister(fd)
        os.close(fd)
