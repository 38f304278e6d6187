"""Wire: the channel a client (the `jobsched` CLI) opens to one node, plaintext or TLS.

With TLS the node's certificate is checked against the given CA (or the system's) and
the name `jobsched`, the DNS name every node certificate carries, whatever address is
dialled (CLI.md, "Client options").
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

NODE_CERTIFICATE_NAME = "jobsched"

CLIENT_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
"""Not the node's reconnect tuning: grpc takes `grpc.min_reconnect_backoff_ms` as the
least time a connection attempt is given, and 100 ms is too little for a busy node to
answer the handshake (the call then fails `timed out before receiving SETTINGS frame`).
"""


@dataclass(frozen=True)
class ClientTls:
    """PEM bytes for a TLS channel: the CA to trust (None = the system's roots) and,
    for mutual TLS, the client's own key and certificate chain."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


def open_client_channel(address: str, tls: ClientTls | None = None) -> grpc.Channel:
    """A synchronous channel to a node's `host:port`; TLS when `tls` is given."""
    if tls is None:
        return grpc.insecure_channel(address, options=CLIENT_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )
    options = [
        *CLIENT_CHANNEL_OPTIONS,
        ("grpc.ssl_target_name_override", NODE_CERTIFICATE_NAME),
    ]
    return grpc.secure_channel(address, credentials, options=options)
