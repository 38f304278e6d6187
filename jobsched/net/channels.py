"""Wire: the one place that opens gRPC channels and listening ports.

Every outbound channel (to peers, to the leader), the node's gRPC port and its REST
port are made here, so that transport security is decided in one place. With TLS
files, gRPC is mutual TLS both ways (this node's certificate is its identity as a
server and as a client; the other end must hold a certificate of the same CA) and
REST is HTTPS with the node's certificate (browsers present none; tokens authorize
there). Peers verify the name `jobsched` (jobsched.identity.SERVER_NAME).
"""

from __future__ import annotations

import grpc
from twisted.application import internet
from twisted.application.service import IService
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from jobsched.identity import SERVER_NAME, TlsFiles, TlsMaterial

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    # grpc also gives each connection attempt this long: 100 ms failed on a busy node
    # ("timed out before receiving SETTINGS frame"), so at least a second.
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
TLS_CHANNEL_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", SERVER_NAME)]


def open_channel(address: str, tls: TlsMaterial | None = None, api=grpc) -> grpc.Channel:
    """A channel to a node's gRPC address (`host:port`): plaintext, or mutual TLS
    presenting `tls.cert` and verifying the node as `jobsched` against `tls.ca_cert`.
    With `api=grpc.aio`, a grpc.aio channel (opened, used and closed on one loop)."""
    if tls is None:
        return api.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert)
    return api.secure_channel(address, credentials, options=TLS_CHANNEL_OPTIONS)


class Wire:
    """Opens the channels and ports of one node: plaintext without TLS files, mutual
    TLS (and HTTPS) with them. The files are read by `load` (start-up), or on first
    use."""

    def __init__(self, tls: TlsFiles | None = None) -> None:
        self._files = tls
        self._material: TlsMaterial | None = None

    @property
    def secure(self) -> bool:
        return self._files is not None

    def load(self) -> None:
        """Read the TLS files (CredentialError naming the option of one that cannot
        be read); nothing to do without TLS."""
        if self._files is not None and self._material is None:
            self._material = self._files.read()

    def _tls(self) -> TlsMaterial | None:
        self.load()
        return self._material

    def open_channel(self, address: str) -> grpc.Channel:
        """A channel to a node's gRPC address (`host:port`)."""
        return open_channel(address, self._tls())

    def open_aio_channel(self, address: str) -> grpc.aio.Channel:
        """A grpc.aio channel to a node's gRPC address, on the running event loop."""
        return open_channel(address, self._tls(), api=grpc.aio)

    def add_port(self, server: grpc.aio.Server, bind: str) -> int:
        """Listen on `bind` (`host:port`); returns the port bound (0 if it failed)."""
        tls = self._tls()
        if tls is None:
            return server.add_insecure_port(bind)
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.ca_cert, require_client_auth=True
        )
        return server.add_secure_port(bind, credentials)

    def http_service(self, port: int, site, interface: str) -> IService:
        """The service that serves `site` on `interface:port`: HTTP, or HTTPS with
        this node's certificate (TLS 1.2 or later; no client certificate asked)."""
        if self._files is None:
            return internet.TCPServer(port, site, interface=interface)
        return internet.SSLServer(port, site, _ServerTlsContext(self), interface=interface)

    def https_options(self, **verification):
        """twisted CertificateOptions serving this node's certificate (TLS 1.2 or
        later); `verification` adds CertificateOptions' client checks."""
        from twisted.internet import ssl

        identity = self._identity()
        return ssl.CertificateOptions(
            privateKey=identity.privateKey.original,
            certificate=identity.original,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **verification,
        )

    def listen_peers(self, reactor, port: int, factory, interface: str):
        """Listen on the peer port (`port` 0: any free one): TCP, or mutual TLS that
        asks each leader for a certificate of the CA (the factory checks that it
        names a peer). Returns the listening port."""
        if self._tls() is None:
            return reactor.listenTCP(port, factory, interface=interface)
        options = self.https_options(
            verify=True,
            caCerts=[authority.original for authority in self._authorities()],
            requireCertificate=True,
        )
        return reactor.listenSSL(port, factory, options, interface=interface)

    def connect_peer(self, reactor, host: str, port: int, factory, timeout: float):
        """Connect to a peer's peer port: TCP, or mutual TLS presenting this node's
        certificate and verifying the peer's as `jobsched` against the CA."""
        from twisted.internet import ssl

        if self._tls() is None:
            return reactor.connectTCP(host, port, factory, timeout=timeout)
        options = ssl.optionsForClientTLS(
            SERVER_NAME,
            trustRoot=ssl.trustRootFromCertificates(self._authorities()),
            clientCertificate=self._identity(),
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )
        return reactor.connectSSL(host, port, factory, options, timeout=timeout)

    def _identity(self):
        from twisted.internet import ssl

        tls = self._tls()
        return ssl.PrivateCertificate.loadPEM(tls.cert + b"\n" + tls.key)

    def _authorities(self) -> list:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
        from twisted.internet import ssl

        bundle = x509.load_pem_x509_certificates(self._tls().ca_cert)
        return [ssl.Certificate.loadPEM(cert.public_bytes(Encoding.PEM)) for cert in bundle]


@implementer(IOpenSSLContextFactory)
class _ServerTlsContext:
    """A server context factory that reads the TLS files when the port is opened
    (service start), not when the service is built."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._options = None

    def getContext(self):
        if self._options is None:
            self._options = self._wire.https_options()
        return self._options.getContext()
