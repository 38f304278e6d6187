"""JobDescriptors: job descriptors behind one epoll that the reactor watches."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.worker.descriptors import JobDescriptors

DEADLINE_SECONDS = 30.0


async def turns_until(predicate, what: str) -> None:
    """Let the reactor run until `predicate()` holds (at most DEADLINE_SECONDS)."""
    deadline = reactor.seconds() + DEADLINE_SECONDS
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"after {DEADLINE_SECONDS}s: {what}")
        await deferLater(reactor, 0.005, lambda: None)


def closed(fd: int, inode: int) -> bool:
    """Whether `fd`, which was the pipe `inode`, is closed (its number may have been
    reused since: then it is another file)."""
    try:
        return os.fstat(fd).st_ino != inode
    except OSError:
        return True


class Reader:
    """Reads a pipe until end of file, recording what came."""

    def __init__(self) -> None:
        self.data = b""
        self.done = False

    def __call__(self, fd: int) -> bool:
        chunk = os.read(fd, 65536)
        self.data += chunk
        self.done = not chunk
        return self.done


class JobDescriptorsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.descriptors = JobDescriptors(reactor)
        self._writers: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        """A pipe whose read end the test hands over; its write end is closed with
        `close_writer`, or else at cleanup (never by number once closed: it may be
        someone else's by then)."""
        read_end, write_end = os.pipe()
        self._writers.add(write_end)
        self.addCleanup(lambda: write_end in self._writers and self.close_writer(write_end))
        return read_end, write_end

    def close_writer(self, fd: int) -> None:
        self._writers.discard(fd)
        os.close(fd)

    def test_it_is_a_read_descriptor(self) -> None:
        self.assertTrue(verifyObject(IReadDescriptor, self.descriptors))

    async def test_each_fd_is_read_as_data_comes_and_closed_once_done(self) -> None:
        (first, first_write), (second, second_write) = self.pipe(), self.pipe()
        inodes = os.fstat(first).st_ino, os.fstat(second).st_ino
        readers = Reader(), Reader()
        self.descriptors.watch(first, readers[0])
        self.descriptors.watch(second, readers[1])
        os.write(first_write, b"one")
        os.write(second_write, b"two")
        await turns_until(lambda: readers[0].data and readers[1].data, "both pipes read")
        self.assertEqual((readers[0].data, readers[1].data), (b"one", b"two"))
        self.close_writer(first_write)
        await turns_until(lambda: readers[0].done, "the first pipe's end read")
        self.assertTrue(closed(first, inodes[0]))
        self.assertFalse(closed(second, inodes[1]))
        self.assertEqual(len(self.descriptors), 1)
        self.close_writer(second_write)
        await turns_until(lambda: not len(self.descriptors), "the second pipe's end read")
        self.assertTrue(closed(second, inodes[1]))

    async def test_the_reactor_watches_it_only_while_it_watches_something(self) -> None:
        read_end, write_end = self.pipe()
        self.descriptors.watch(read_end, Reader())
        self.assertIn(self.descriptors, reactor.getReaders())
        self.close_writer(write_end)
        await turns_until(lambda: not len(self.descriptors), "the pipe's end read")
        self.assertNotIn(self.descriptors, reactor.getReaders())

    async def test_a_failing_handler_closes_its_fd_and_the_others_go_on(self) -> None:
        (failing, failing_write), (healthy, healthy_write) = self.pipe(), self.pipe()
        reader = Reader()

        def broken(_fd: int) -> bool:
            raise RuntimeError("broken handler")

        inode = os.fstat(failing).st_ino
        self.descriptors.watch(failing, broken)
        self.descriptors.watch(healthy, reader)
        os.write(failing_write, b"x")
        await turns_until(lambda: closed(failing, inode), "the failing handler's fd closed")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        os.write(healthy_write, b"still here")
        self.close_writer(healthy_write)
        await turns_until(lambda: reader.done, "the healthy pipe read to its end")
        self.assertEqual(reader.data, b"still here")
