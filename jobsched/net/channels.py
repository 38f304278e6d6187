"""Wire: the one place that opens gRPC channels and listening ports.

Every outbound channel (to peers, to the leader) and the node's server port are made
here, so that transport security is decided in one place.
"""

from __future__ import annotations

import grpc

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    # grpc also gives each connection attempt this long: 100 ms failed on a busy node
    # ("timed out before receiving SETTINGS frame"), so at least a second.
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Wire:
    """Opens the channels and ports of one node (plaintext on 127.0.0.1 by default)."""

    def open_channel(self, address: str) -> grpc.Channel:
        """A channel to a node's gRPC address (`host:port`)."""
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)

    def add_port(self, server: grpc.Server, bind: str) -> int:
        """Listen on `bind` (`host:port`); returns the port bound (0 if it failed)."""
        return server.add_insecure_port(bind)
