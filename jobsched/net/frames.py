"""Protobuf messages framed on a TCP or TLS connection: each a 4-byte big-endian length,
then the message. The peer port carries a leader's AppendEntries this way
(raft/peer_links.py sends them, api/peer_port.py answers).

A length with its top bit set marks a side frame (a PeerFrame: a follower's worker
results and the leader's answers to them). Only a peer that said it takes them is sent
one; a node from before them reads such a length as too long and ends the connection.
"""

from __future__ import annotations

import struct

from twisted.internet import protocol

from jobsched.net.access import Caller
from jobsched.net.channels import MAX_MESSAGE_BYTES

_LENGTH = struct.Struct("!I")
SIDE_FRAME = 0x8000_0000


class FramedMessages(protocol.Protocol):
    """Sends messages as frames; a frame longer than gRPC's message limit ends the
    connection. Subclasses decode frames in `frame_received` and side frames in
    `side_frame_received` (which by default ends the connection)."""

    MAX_LENGTH = MAX_MESSAGE_BYTES

    _ended = False
    _caller: Caller | None = None
    _buffered = 0
    _needed = 4

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # each message leaves at once, as gRPC's do

    def caller(self) -> Caller:
        """Who is at the other end (with TLS, the certificate it showed); looked up once."""
        if self._caller is None:
            self._caller = Caller.of_connection(self.transport)
        return self._caller

    def send_message(self, message) -> None:
        self._send(0, message.SerializeToString())

    def send_side_message(self, message) -> None:
        self._send(SIDE_FRAME, message.SerializeToString())

    def _send(self, kind: int, payload: bytes) -> None:
        if not self._ended:  # nothing goes out once ended
            self.transport.write(_LENGTH.pack(kind | len(payload)) + payload)
            _send_now(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered < self._needed:
            return  # a long frame comes in many reads: joined once, when complete
        unread = b"".join(self._chunks) if len(self._chunks) > 1 else data
        start, self._needed = 0, 4
        while len(unread) - start >= 4 and not self._ended:
            (word,) = _LENGTH.unpack_from(unread, start)
            length = word & ~SIDE_FRAME
            if length > self.MAX_LENGTH:
                self.abort()
                return
            end = start + 4 + length
            if end > len(unread):
                self._needed = 4 + length
                break
            frame = unread[start + 4 : end]
            start = end
            if word & SIDE_FRAME:
                self.side_frame_received(frame)
            else:
                self.frame_received(frame)
        rest = b"" if self._ended else unread[start:]
        self._chunks = [rest] if rest else []
        self._buffered = len(rest)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self._ended = True

    def abort(self) -> None:
        """End the connection at once; frames already read are not handled."""
        self._ended = True
        self.transport.abortConnection()

    def frame_received(self, frame: bytes) -> None:
        raise NotImplementedError

    def side_frame_received(self, frame: bytes) -> None:
        self.abort()


def _send_now(transport) -> None:
    """Hand what `transport` buffered to the kernel now rather than at the reactor's
    next turn: the other end waits for it, and the rest of this turn (applying entries,
    starting jobs) can take milliseconds. With TLS, the TCP connection is beneath it;
    a transport that is no TCP connection (tests) sends as it does anyway. A connection
    closing once its data is out is left to the reactor, which then closes it; a failed
    write stays pending, so the reactor meets the failure again and ends the connection."""
    connection = getattr(transport, "transport", transport)
    if (
        getattr(connection, "connected", False)
        and not getattr(connection, "disconnecting", True)
        and hasattr(connection, "doWrite")
    ):
        connection.doWrite()
