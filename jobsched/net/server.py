"""GrpcServerService: one gRPC port for every service of a node (API.md §1).

The server is `grpc.aio` on an asyncio loop in a thread of its own. Handlers are
coroutines that reach the reactor through the bridge (`net/bridge.py`), so a call
that waits — for a commit, for the leader, for a stream's reader — holds no thread,
and clients cannot crowd out Raft's RPCs on the same port. Its `loop_users` (the
outbound AppendEntries streams) use the loop while it runs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

import grpc
from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from jobsched.config import format_address
from jobsched.interfaces import IApiServer, IEventLoopUser
from jobsched.net.access import AccessPolicy
from jobsched.net.channels import Wire
from jobsched.net.interceptors import AccessInterceptor, MalformedRequestInterceptor
from jobsched.net.loop import EventLoopThread

Registration = Callable[[grpc.aio.Server], None]
"""Adds one servicer to a server (e.g. a bound `add_XServicer_to_server`)."""

STOP_GRACE_SECONDS = 1.0
START_SECONDS = 10.0
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]
"""Without this a second server on a port already served would share it silently."""


class PortUnavailable(RuntimeError):
    """The gRPC port could not be bound (in use, or not an address of this host)."""


@implementer(IApiServer)
class GrpcServerService(Service):
    """Serves the registered services on `host:port` (127.0.0.1 by default), through
    the wire's port (plaintext or mutual TLS); `access` decides who may call what;
    `loop_users` are attached to the loop once serving and detached before it stops."""

    log = Logger()

    def __init__(
        self,
        host: str,
        port: int,
        registrations: Sequence[Registration],
        wire: Wire,
        reactor=None,
        access: AccessPolicy | None = None,
        loop_users: Sequence[IEventLoopUser] = (),
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._bind = format_address(host, port)
        self._registrations = list(registrations)
        self._wire = wire
        self._reactor = reactor
        self._access = access
        self._loop_users = list(loop_users)
        self._loop: EventLoopThread | None = None
        self._server: grpc.aio.Server | None = None
        self.port = port

    def startService(self) -> None:
        """Bind and start, or raise PortUnavailable (nothing is left running)."""
        super().startService()
        self._loop = EventLoopThread("grpc-server")
        self._loop.start()
        try:
            self.port = self._loop.submit(self._start()).result(START_SECONDS)
        except BaseException:
            self._loop.stop()
            self._loop.join(START_SECONDS)
            self._loop = None
            raise
        for user in self._loop_users:
            user.attach(self._loop.loop)
        security = "mutual TLS" if self._wire.secure else "plaintext"
        self.log.info("gRPC listening on {bind} ({security})", bind=self._bind, security=security)

    async def _start(self) -> int:
        interceptors = [MalformedRequestInterceptor()]
        if self._access is not None:
            interceptors.insert(0, AccessInterceptor(self._access))
        server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
        for register in self._registrations:
            register(server)
        try:
            port = self._wire.add_port(server, self._bind)
        except RuntimeError:
            port = 0
        if port == 0:
            del server  # never started: free it (and grpc's poller) before the loop ends
            gc.collect()
            raise PortUnavailable(
                f"cannot bind gRPC port {self._bind} (in use, or not an address of this host)"
            )
        await server.start()
        self._server = server
        return port

    def stopService(self) -> defer.Deferred | None:
        """Stop serving (calls still running get STOP_GRACE_SECONDS), end the loop and
        its thread; fires on the reactor once the thread has finished."""
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is None:
            return None
        stopped = defer.Deferred()

        def finished() -> None:
            loop.join()
            stopped.callback(None)

        def end_loop(_future) -> None:
            loop.stop(on_exit=lambda: self._reactor.callFromThread(finished))

        loop.submit(self._stop()).add_done_callback(end_loop)
        return stopped

    async def _stop(self) -> None:
        for user in self._loop_users:
            await user.detach()
        server, self._server = self._server, None
        if server is not None:
            await server.stop(STOP_GRACE_SECONDS)
            del server
        # Finished calls caught in reference cycles (an error's traceback) keep grpc's
        # aio machinery, and its poller thread, alive until collected; collect them
        # while the loop they use is still open.
        gc.collect()
