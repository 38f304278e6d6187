"""NodeService: builds one jobsched node from its NodeConfig and wires the parts.

The constructor only wires; `startService` does the I/O (opening storage, reaching the
Docker engine, binding the gRPC port) and stops start-up with one line when one of
them cannot be done. A durable write that fails later ends the process the same way
(exit 1), for a supervisor to restart it from its data directory. Start order: fence
keeper, Raft, worker, dispatcher, heartbeats, gRPC server, event hub, REST site
(stopped in reverse).
"""

from __future__ import annotations

import ipaddress
import random
import signal

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import Site

from jobsched.api.event_hub import EventHub
from jobsched.api.grpc_servicers import InternalServicer, SchedulerServicer
from jobsched.api.metrics import StateCollector
from jobsched.api.output_sse import OutputFeeds
from jobsched.api.peer_port import PeerPortService, results_taker
from jobsched.api.raft_servicer import RaftServicer
from jobsched.api.rest import SITE_OPTIONS, RestApi
from jobsched.app import ClusterAPI, DrainFlag
from jobsched.config import NodeConfig
from jobsched.dispatch import Dispatcher
from jobsched.identity import CredentialError
from jobsched.jobs.table import JobTable
from jobsched.logs import exit_with_error
from jobsched.metrics import NodeMetrics
from jobsched.net.access import AccessPolicy
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.leader import LeaderClient
from jobsched.net.peers import PeerClient
from jobsched.net.server import GrpcServerService, PortUnavailable
from jobsched.net.streams import StreamLimits
from jobsched.raft.append_streams import AppendStreams
from jobsched.raft.peer_links import PeerLinks
from jobsched.raft.service import RaftService, RaftTimings
from jobsched.raft.sqlite_storage import SqliteStorage, StorageError
from jobsched.raft.storage import MemoryStorage
from jobsched.raft.transport import GrpcTransport
from jobsched.registry import WorkerRegistry
from jobsched.routing import Router
from jobsched.scheduler import Assigner
from jobsched.tokens import TokenFileError, TokenStore, read_tokens
from jobsched.worker.fence import Fence, KeeperProcess
from jobsched.worker.heartbeat import HeartbeatSender
from jobsched.worker.live_output import LiveOutputs
from jobsched.worker.output_reader import LocalOutputReader
from jobsched.worker.reporting import ResultReporter
from jobsched.worker.service import WorkerService

SHUTDOWN_TRANSFER_SECONDS = 3.0
SHUTDOWN_GRACE_SECONDS = 30.0
SHUTDOWN_FLUSH_SECONDS = 5.0


def build_executor(config: NodeConfig, reactor, fence: Fence, live_output: LiveOutputs):
    """The executor the config asks for (no I/O yet); its runs are under `fence`, their
    output goes to `live_output` as it comes."""
    if config.executor == "process":
        from jobsched.worker.process import ProcessExecutor

        return ProcessExecutor(
            reactor,
            max_output_bytes=config.max_output_bytes,
            fence=fence,
            live_output=live_output,
        )
    from jobsched.worker.docker import DockerExecutor

    return DockerExecutor(
        reactor,
        image=config.image,
        max_output_bytes=config.max_output_bytes,
        slots=config.worker_slots,
        cluster_label=f"node-{config.node_id}",
        fence=fence,
        live_output=live_output,
    )


def binds_beyond_this_host(config: NodeConfig) -> bool:
    """Whether the node's ports are open to other hosts (any address but loopback)."""
    if config.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(config.host).is_loopback
    except ValueError:  # a host name
        return True


def build_storage(config: NodeConfig, reactor):
    """The node's Raft storage provider (opened when Raft starts)."""
    if not config.data_dir:
        return MemoryStorage()
    return SqliteStorage(config.data_dir, config.node_id, reactor)


class NodeService(MultiService):
    """One cluster node: consensus, job table, worker, gRPC and REST servers."""

    log = Logger()

    def __init__(self, config: NodeConfig, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self._reactor = reactor
        peers = {peer_id: str(peer) for peer_id, peer in config.peers.items()}
        wire = self._wire = Wire(config.tls_files)
        self.tokens = TokenStore() if config.auth_token_file else None
        self.metrics = metrics = NodeMetrics()
        self.fence = Fence(reactor, KeeperProcess(reactor))
        self.fence.setServiceParent(self)
        self.table = JobTable()
        self.storage = build_storage(config, reactor)
        self.append_streams = AppendStreams(reactor, wire.open_aio_channel)
        links = PeerLinks(reactor, wire, {i: peer.host for i, peer in config.peers.items()})
        self.transport = GrpcTransport(
            peers, wire, reactor, streams=self.append_streams, links=links
        )
        self.raft = RaftService(
            node_id=config.node_id,
            peers=peers,
            self_address=config.advertise_addr,
            storage=self.storage,
            transport=self.transport,
            state_machine=self.table,
            clock=reactor,
            rng=random.Random(),
            timings=RaftTimings(
                election_timeout_min=config.election_timeout_min / 1000,
                election_timeout_max=config.election_timeout_max / 1000,
                heartbeat_interval=config.heartbeat_interval / 1000,
            ),
            metrics=metrics,
            # Crash-only: a disk that fails a write ends the process, one line on stderr.
            on_storage_failure=exit_with_error,
        )
        self.raft.setServiceParent(self)

        drain_flag = self._drain_flag = DrainFlag()
        registry = WorkerRegistry(reactor, config.worker_expiry, config.peers)
        self.api = ClusterAPI(config, self.raft, self.table, registry, drain_flag, reactor)
        self.leader = LeaderClient(lambda: self.raft.status().leader_address, wire, reactor)
        self.live_output = LiveOutputs(reactor, config.max_output_bytes)
        self.table.add_listener(self.live_output.job_changed)
        self.peers = PeerClient(peers, wire, reactor)
        access = AccessPolicy(config.peers, config.tls, self.tokens)
        self._peer_port_service = peer_port = self._peer_port(access)
        links.take_results(results_taker(self.api, access, metrics))
        self.router = Router(
            self.api,
            self.leader,
            LocalOutputReader(config.node_id, self.table, self.live_output),
            self.peers,
            reactor,
            peer_results=peer_port,
        )

        self.executor = build_executor(config, reactor, self.fence, self.live_output)
        self.reporter = ResultReporter(self.router, reactor)
        self.worker = WorkerService(
            config.node_id,
            self.table,
            self.executor,
            self.reporter,
            config.worker_slots,
            reactor,
            metrics=metrics,
        )
        self.worker.setServiceParent(self)
        self.fence.add_lost_listener(self.worker.fence)
        self.dispatcher = Dispatcher(
            config.node_id,
            self.raft,
            self.table,
            Assigner(),
            self.worker,
            registry,
            config.worker_slots,
            lambda: drain_flag.active,
            reactor,
            worker_expiry=config.worker_expiry,
        )
        self.dispatcher.setServiceParent(self)
        self.api.use_placer(self.dispatcher.place_new, self.dispatcher.results_proposed)
        HeartbeatSender(
            config.node_id,
            self.raft,
            self.worker,
            self.fence,
            self.router,
            lambda: drain_flag.active,
            reactor,
            config.worker_expiry,
        ).setServiceParent(self)

        bridge = ReactorBridge(reactor)
        streams = StreamLimits(stall_seconds=config.stream_stall_timeout)
        self.grpc = GrpcServerService(
            config.host,
            config.port,
            [
                SchedulerServicer(self.api, self.router, bridge, streams, metrics).register,
                InternalServicer(self.api, self.dispatcher, bridge, self.router, metrics).register,
                RaftServicer(self.raft, bridge, metrics, self._advertised_peer_port).register,
            ],
            wire,
            reactor,
            access=access,
            loop_users=[self.append_streams],
        )
        self.grpc.setServiceParent(self)
        metrics.registry.register(StateCollector(self.api, self.worker, self.storage, streams))
        if config.dashboard_port:
            self.events = EventHub(self.table, self.raft, self.api, self.router, reactor)
            self.events.setServiceParent(self)
            outputs = OutputFeeds(self.router, reactor)
            rest = RestApi(self.api, self.router, metrics, self.events, self.tokens, outputs)
            site = Site(rest.resource(), **SITE_OPTIONS)
            site.noisy = False
            wire.http_service(config.dashboard_port, site, config.host).setServiceParent(self)

    def _peer_port(self, access: AccessPolicy) -> PeerPortService | None:
        """The peer port, started with the node (None with --peer-port off)."""
        config = self.config
        if config.peer_port is None:
            return None
        service = PeerPortService(
            self.raft,
            access,
            self._wire,
            self._reactor,
            config.host,
            config.peer_port,
            self.metrics,
            advertise=config.advertise_peer_port,
        )
        service.setServiceParent(self)
        return service

    def _advertised_peer_port(self) -> int:
        """What this node's AppendEntries answers name as its peer port (0: none)."""
        return self._peer_port_service.advertised_port if self._peer_port_service else 0

    def startService(self) -> None:
        self.log.info(
            "jobsched node {node_id} starting: gRPC {host}:{port}, REST port {http}, peers {peers}",
            node_id=self.config.node_id,
            host=self.config.host,
            port=self.config.port,
            http=self.config.dashboard_port or "off",
            peers=sorted(self.config.peers) or "none",
        )
        if self.config.executor == "docker":
            from jobsched.worker.docker import EngineUnreachable, require_engine

            try:
                require_engine()
            except EngineUnreachable as error:
                exit_with_error(f"--executor docker: {error}")
            self.log.info("Executor: docker (default image {image})", image=self.config.image)
        self._load_credentials()
        try:
            super().startService()
        except (StorageError, PortUnavailable) as error:
            exit_with_error(str(error))
        self._reactor.callWhenRunning(self._exit_zero_on_sigterm)
        self._reactor.callWhenRunning(self._reload_tokens_on_sighup)

    def _load_credentials(self) -> None:
        """Read the TLS files and the tokens (one line and exit when one cannot serve);
        warn when the node is open beyond this host without TLS."""
        try:
            self._wire.load()
        except CredentialError as error:
            exit_with_error(str(error))
        if self.config.tls:
            self.log.info("TLS on: mutual TLS for gRPC, HTTPS for REST")
        elif binds_beyond_this_host(self.config):
            self.log.warn(
                "No TLS on {host}: anyone who reaches this address may call every API, "
                "node-to-node ones included (see docs/operations.md)",
                host=self.config.host,
            )
        if self.tokens is not None:
            try:
                self.tokens.replace(read_tokens(self.config.auth_token_file))
            except TokenFileError as error:
                exit_with_error(f"--auth-token-file: {error}")
            self.log.info("Auth tokens: {summary}", summary=self.tokens.summary())

    def _reload_tokens_on_sighup(self) -> None:
        if self.tokens is not None:
            signal.signal(
                signal.SIGHUP,
                lambda _signum, _frame: self._reactor.callFromThread(self.reload_tokens),
            )

    def reload_tokens(self) -> None:
        """Read --auth-token-file again (SIGHUP); a file that cannot be used leaves
        the tokens in force as they were. Logs counts, never tokens."""
        path = self.config.auth_token_file
        try:
            pairs = read_tokens(path)
            if not pairs:
                raise TokenFileError("holds no token")
        except TokenFileError as error:
            self.log.warn(
                "Auth tokens not reloaded from {path} ({reason}); keeping {summary}",
                path=path,
                reason=str(error),
                summary=self.tokens.summary(),
            )
            return
        self.tokens.replace(pairs)
        self.log.info(
            "Auth tokens reloaded from {path}: {summary}", path=path, summary=self.tokens.summary()
        )

    def _exit_zero_on_sigterm(self) -> None:
        """SIGTERM/SIGINT start the graceful stop below and the process exits 0 (twistd's
        own handler would re-raise the signal and exit 143)."""

        def stop(_signum, _frame):
            self._reactor.callFromThread(self._reactor.stop)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def _log_transfer(self, outcome) -> None:
        self.log.info("Shutdown hand-over: {outcome}", outcome=outcome[1])

    def _log_transfer_failure(self, failure) -> None:
        self.log.warn("Shutdown hand-over failed: {reason}", reason=failure.getErrorMessage())

    @defer.inlineCallbacks
    def stopService(self):
        """Graceful stop: refuse submissions, hand leadership away, let running jobs
        finish (then kill and report them failed), deliver results, close storage."""
        self.log.info("Stopping: no new jobs; handing over and finishing running jobs")
        self._drain_flag.active = True
        self.raft.refuse_leadership()
        if self.api.is_leader() and self.config.peers:
            transfer = self.api.transfer_leadership(0)
            transfer.addTimeout(SHUTDOWN_TRANSFER_SECONDS, self._reactor)
            transfer.addCallbacks(self._log_transfer, self._log_transfer_failure)
            yield transfer
        yield self.worker.wind_down(SHUTDOWN_GRACE_SECONDS)
        yield self.reporter.flush(SHUTDOWN_FLUSH_SECONDS)
        yield super().stopService()
        self.leader.close()
        self.peers.close()
        self.transport.close()
