"""AppendEntries over one long-lived gRPC stream per peer (RaftService.AppendEntriesStream).

A unary call costs both ends the setting up of a call: on this machine a follower
spends about half a millisecond of CPU more on a unary AppendEntries than on a message
of an open stream, and the leader about a tenth (docs/performance.md). The streams are
grpc.aio calls on the gRPC server's event loop, which they use while it runs
(`attach`, `detach`); requests travel there from the reactor, and answers back, in
batches (net/loop.Inbox).

A stream answers in order, so answers are matched to requests first in, first out. A
request not answered within its timeout fails, as a unary call would, and ends its
stream (the next request opens another); a stream that ends with an error fails every
request still on it. A stream that ends before its first answer with UNIMPLEMENTED (a
node of an older version) or INTERNAL (how grpc reports a write that raced with such
an end) sends its peer unary calls for UNARY_SECONDS, then a stream is tried again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial

import grpc
from twisted.internet import defer
from zope.interface import implementer

from jobsched._proto import scheduler_pb2 as pb
from jobsched.interfaces import IEventLoopUser
from jobsched.net.loop import Inbox, wake_loop
from jobsched.net.outbound import CallFailed

METHOD = "/scheduler.RaftService/AppendEntriesStream"
UNARY_SECONDS = 60.0
NOT_SERVED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL)
"""How a stream to a peer that does not serve AppendEntriesStream ends."""


@implementer(IEventLoopUser)
class AppendStreams:
    """The streams of one node to its peers, by peer address."""

    def __init__(
        self,
        reactor,
        open_channel: Callable[[str], grpc.aio.Channel],
        unary_seconds: float = UNARY_SECONDS,
    ) -> None:
        self._reactor = reactor
        self._open_channel = open_channel
        self._unary_seconds = unary_seconds
        self._to_reactor = Inbox(reactor.callFromThread)
        self._to_loop: Inbox | None = None
        self._unary_until: dict[str, float] = {}  # address -> time.monotonic()
        # Used on the loop thread only:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._streams: dict[str, _PeerStream] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._to_loop = Inbox(partial(wake_loop, loop))

    async def detach(self) -> None:
        self._to_loop = None
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            await stream.close()
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def serves(self, address: str) -> bool:
        """Whether a request to `address` goes on a stream (else: a unary call)."""
        if self._to_loop is None:
            return False
        return time.monotonic() >= self._unary_until.get(address, 0.0)

    def send(self, address: str, request: pb.AppendEntriesRequest, timeout: float):
        """A Deferred of the answer (pb.AppendEntriesResponse) or of a CallFailed."""
        to_loop = self._to_loop
        outstanding = Outstanding(self._reactor, timeout, partial(self._expired, address))
        if to_loop is None:
            outstanding.settle(CallFailed(grpc.StatusCode.UNAVAILABLE, "no event loop"))
        else:
            to_loop.put(partial(self._write, address, request, outstanding))
        return outstanding.deferred

    def _expired(self, address: str, outstanding: Outstanding) -> None:
        to_loop = self._to_loop
        if to_loop is not None:
            to_loop.put(partial(self._end_stream_of, address, outstanding))

    # ------------------------------------------------------------------ loop thread

    def _write(self, address: str, request, outstanding: Outstanding) -> None:
        if self._to_loop is None:
            self._settle(outstanding, CallFailed(grpc.StatusCode.UNAVAILABLE, "stream closed"))
            return
        stream = self._streams.get(address)
        if stream is None or stream.ended:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = self._open_channel(address)
            stream = self._streams[address] = _PeerStream(
                channel, self._settle, partial(self._send_unary, address)
            )
        stream.write(request, outstanding)

    def _send_unary(self, address: str) -> None:
        self._unary_until[address] = time.monotonic() + self._unary_seconds

    def _end_stream_of(self, address: str, outstanding: Outstanding) -> None:
        stream = self._streams.get(address)
        if stream is not None and stream.holds(outstanding):
            stream.cancel()

    def _settle(self, outstanding: Outstanding, result) -> None:
        self._to_reactor.put(partial(outstanding.settle, result))


class _PeerStream:
    """One AppendEntriesStream call: a task writing requests in order, a task reading
    answers and matching them to the requests waiting."""

    def __init__(self, channel: grpc.aio.Channel, settle, on_not_served) -> None:
        method = channel.stream_stream(
            METHOD,
            request_serializer=pb.AppendEntriesRequest.SerializeToString,
            response_deserializer=pb.AppendEntriesResponse.FromString,
        )
        self._call = method()
        self._settle = settle
        self._on_not_served = on_not_served
        self._answered = False
        self._waiting: deque[Outstanding] = deque()
        self._outbox: asyncio.Queue = asyncio.Queue()
        self.ended = False
        self._writer = asyncio.ensure_future(self._write_all())
        self._reader = asyncio.ensure_future(self._read_all())

    def write(self, request, outstanding: Outstanding) -> None:
        self._waiting.append(outstanding)
        self._outbox.put_nowait(request)

    def holds(self, outstanding: Outstanding) -> bool:
        return outstanding in self._waiting

    def cancel(self) -> None:
        """End the call; requests still waiting fail, new ones need a new stream."""
        self.ended = True
        self._call.cancel()

    async def close(self) -> None:
        self.cancel()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)

    async def _write_all(self) -> None:
        try:
            while True:
                await self._call.write(await self._outbox.get())
        except (grpc.RpcError, asyncio.InvalidStateError):
            self.cancel()  # the call has ended: the reader tells how

    async def _read_all(self) -> None:
        try:
            failure = await self._answer_all()
        except asyncio.CancelledError:
            failure = CallFailed(grpc.StatusCode.CANCELLED, "stream closed")
        self.ended = True
        self._writer.cancel()
        self._call.cancel()
        if not self._answered and failure.code in NOT_SERVED:
            self._on_not_served()  # first: a failed request may be sent again at once
        while self._waiting:
            self._settle(self._waiting.popleft(), failure)

    async def _answer_all(self) -> CallFailed:
        """Match answers to requests until the call ends; how it ended."""
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    return CallFailed(grpc.StatusCode.UNAVAILABLE, "the peer ended the stream")
                self._answered = True
                if self._waiting:
                    self._settle(self._waiting.popleft(), response)
        except grpc.RpcError as error:
            return CallFailed.from_rpc_error(error)


class Outstanding:
    """One request on a stream, on the reactor: its Deferred and its deadline."""

    def __init__(self, reactor, timeout: float, on_expiry) -> None:
        self.deferred = defer.Deferred(self._cancelled)
        self._timer = reactor.callLater(timeout, self._expire)
        self._on_expiry = on_expiry

    def settle(self, result) -> None:
        if self.deferred.called:
            return
        self._stop_timer()
        if isinstance(result, CallFailed):
            self.deferred.errback(result)
        else:
            self.deferred.callback(result)

    def _expire(self) -> None:
        self._timer = None
        if not self.deferred.called:
            self._on_expiry(self)  # first: what the errback sends next needs a new stream
            expired = CallFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            self.deferred.errback(expired)

    def _cancelled(self, _deferred) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
