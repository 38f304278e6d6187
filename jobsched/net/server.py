"""GrpcServerService: one gRPC port for every service of a node (API.md §1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from twisted.application.service import Service
from twisted.internet import threads
from twisted.logger import Logger
from zope.interface import implementer

from jobsched.config import format_address
from jobsched.interfaces import IApiServer
from jobsched.net.channels import Wire
from jobsched.net.interceptors import MalformedRequestInterceptor

Registration = Callable[[grpc.Server], None]
"""Adds one servicer to a server (e.g. a bound `add_XServicer_to_server`)."""

STOP_GRACE_SECONDS = 1.0


@implementer(IApiServer)
class GrpcServerService(Service):
    """Serves the registered services on `host:port` (127.0.0.1 by default)."""

    log = Logger()

    def __init__(
        self,
        host: str,
        port: int,
        registrations: Sequence[Registration],
        wire: Wire,
        max_workers: int = 32,
    ) -> None:
        self._bind = format_address(host, port)
        self._registrations = list(registrations)
        self._wire = wire
        self._max_workers = max_workers
        self._server = None
        self.port = port

    def startService(self) -> None:
        super().startService()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers),
            interceptors=[MalformedRequestInterceptor()],
        )
        for register in self._registrations:
            register(server)
        self.port = self._wire.add_port(server, self._bind)
        if self.port == 0:
            raise RuntimeError(f"cannot bind gRPC port {self._bind}")
        server.start()
        self._server = server
        self.log.info("gRPC listening on {bind}", bind=self._bind)

    def stopService(self):
        super().stopService()
        server, self._server = self._server, None
        if server is None:
            return None
        return threads.deferToThread(lambda: server.stop(STOP_GRACE_SECONDS).wait())
