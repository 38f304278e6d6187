"""Protobuf messages framed on a TCP or TLS connection: each a 4-byte big-endian length,
then the message. The peer port carries a leader's AppendEntries this way
(raft/peer_links.py sends them, api/peer_port.py answers)."""

from __future__ import annotations

from twisted.protocols.basic import Int32StringReceiver

from jobsched.net.channels import MAX_MESSAGE_BYTES


class FramedMessages(Int32StringReceiver):
    """Sends messages as frames; a frame longer than gRPC's message limit ends the
    connection. Subclasses decode frames in `stringReceived`."""

    MAX_LENGTH = MAX_MESSAGE_BYTES

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # each message leaves at once, as gRPC's do

    def send_message(self, message) -> None:
        self.sendString(message.SerializeToString())

    def lengthLimitExceeded(self, length: int) -> None:
        self.transport.abortConnection()
