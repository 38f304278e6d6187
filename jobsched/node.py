"""NodeService: builds one jobsched node from its NodeConfig and wires the parts.

Start order: Raft, worker, dispatcher, gRPC server, REST site (stopped in reverse).
"""

from __future__ import annotations

import random
import signal

from twisted.application import internet
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import Site

from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.bridge import ReactorBridge
from jobsched.api.grpc_server import GrpcServerService, InternalServicer, SchedulerServicer
from jobsched.api.rest import RestApi
from jobsched.app import ClusterAPI
from jobsched.config import NodeConfig
from jobsched.dispatch import Dispatcher
from jobsched.jobs.table import JobTable
from jobsched.leader_client import LeaderClient
from jobsched.raft.service import RaftService, RaftTimings
from jobsched.raft.sqlite_storage import SqliteStorage, StorageError
from jobsched.raft.storage import MemoryStorage
from jobsched.raft.transport import GrpcTransport, RaftServicer
from jobsched.scheduler import Assigner
from jobsched.worker.heartbeat import HeartbeatSender
from jobsched.worker.reporting import ResultReporter
from jobsched.worker.service import WorkerService

FORWARD_TIMEOUT_SECONDS = 8.0
ENGINE_CHECK_SECONDS = 5
SHUTDOWN_TRANSFER_SECONDS = 3.0
SHUTDOWN_GRACE_SECONDS = 30.0
SHUTDOWN_FLUSH_SECONDS = 5.0


def require_docker_engine() -> None:
    """Stop start-up with one clear line when the Docker engine does not answer
    (checked once, before the reactor runs)."""
    import docker

    try:
        client = docker.from_env(timeout=ENGINE_CHECK_SECONDS)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # any failure to reach the engine means the same here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SystemExit(
            f"jobsched: error: --executor docker: cannot reach the Docker engine ({reason}); "
            "start one, or use --executor process for development"
        ) from None


def build_executor(config: NodeConfig, reactor):
    """The executor the config asks for; the process one warns loudly."""
    if config.executor == "process":
        from jobsched.worker.process import ProcessExecutor

        return ProcessExecutor(reactor, max_output_bytes=config.max_output_bytes)
    from jobsched.worker.docker import DockerExecutor

    require_docker_engine()
    NodeService.log.info("Executor: docker (default image {image})", image=config.image)
    return DockerExecutor(
        reactor,
        image=config.image,
        max_output_bytes=config.max_output_bytes,
        slots=config.worker_slots,
        cluster_label=f"node-{config.node_id}",
    )


def open_storage(config: NodeConfig, reactor):
    """The node's Raft storage and what it holds. A damaged, foreign or unreadable data
    file stops start-up with one line naming the file."""
    if not config.data_dir:
        storage = MemoryStorage()
        return storage, storage.load()
    storage = SqliteStorage(config.data_dir, config.node_id, reactor)
    try:
        loaded = storage.load()
    except StorageError as error:
        raise SystemExit(f"jobsched: error: {error}") from None
    NodeService.log.info(
        "Durable storage {path}: term {term}, {count} log entries, snapshot at {index}",
        path=storage.path,
        term=loaded.term,
        count=len(loaded.entries),
        index=loaded.snapshot.index if loaded.snapshot else 0,
    )
    return storage, loaded


class NodeService(MultiService):
    """One cluster node: consensus, job table, worker, gRPC and REST servers."""

    log = Logger()

    def __init__(self, config: NodeConfig, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self._reactor = reactor
        self.table = JobTable()
        storage, loaded = open_storage(config, reactor)
        self.transport = GrpcTransport(
            {peer_id: str(peer) for peer_id, peer in config.peers.items()}, reactor
        )
        self.raft = RaftService(
            node_id=config.node_id,
            peers={peer_id: str(peer) for peer_id, peer in config.peers.items()},
            self_address=config.advertise_addr,
            storage=storage,
            transport=self.transport,
            state_machine=self.table,
            clock=reactor,
            rng=random.Random(),
            timings=RaftTimings(
                election_timeout_min=config.election_timeout_min / 1000,
                election_timeout_max=config.election_timeout_max / 1000,
                heartbeat_interval=config.heartbeat_interval / 1000,
            ),
            loaded=loaded,
        )
        self.raft.setServiceParent(self)
        self.leader = LeaderClient(self.raft, reactor)
        self.api = ClusterAPI(config, self.raft, self.table, reactor, self.leader, storage)

        self.reporter = ResultReporter(self._deliver_results, reactor)
        self.worker = WorkerService(
            config.node_id,
            self.table,
            build_executor(config, reactor),
            self.reporter,
            config.worker_slots,
            reactor,
        )
        self.worker.setServiceParent(self)
        self.dispatcher = Dispatcher(
            config.node_id,
            self.raft,
            self.table,
            Assigner(),
            self.worker,
            config.worker_slots,
            lambda: self.api.draining,
            reactor,
            worker_expiry=config.worker_expiry,
        )
        self.dispatcher.setServiceParent(self)
        self.api.dispatcher = self.dispatcher
        HeartbeatSender(
            config.node_id,
            self.raft,
            self.worker,
            self.leader,
            lambda: self.api.draining,
            reactor,
            config.worker_expiry,
        ).setServiceParent(self)

        bridge = ReactorBridge(reactor)
        self.grpc = GrpcServerService(
            config.host,
            config.port,
            [
                SchedulerServicer(self.api, bridge),
                InternalServicer(self.api, bridge),
                RaftServicer(self.raft, bridge),
            ],
        )
        self.grpc.setServiceParent(self)
        if config.dashboard_port:
            site = Site(RestApi(self.api).resource())
            site.noisy = False
            internet.TCPServer(config.dashboard_port, site, interface=config.host).setServiceParent(
                self
            )

    def _deliver_results(self, updates):
        """Results of this node's worker: proposed here when leading, else forwarded."""
        if self.raft.status().role == "leader":
            return self.api.accept_results(updates)
        request = pb.ForwardJobStatusRequest(updates=updates)
        return self.leader.internal("ForwardJobStatus", request, FORWARD_TIMEOUT_SECONDS)

    def startService(self) -> None:
        self.log.info(
            "jobsched node {node_id} starting: gRPC {host}:{port}, REST port {http}, peers {peers}",
            node_id=self.config.node_id,
            host=self.config.host,
            port=self.config.port,
            http=self.config.dashboard_port or "off",
            peers=sorted(self.config.peers) or "none",
        )
        super().startService()
        self._reactor.callWhenRunning(self._exit_zero_on_sigterm)

    def _exit_zero_on_sigterm(self) -> None:
        """SIGTERM/SIGINT start the graceful stop below and the process exits 0 (twistd's
        own handler would re-raise the signal and exit 143)."""

        def stop(_signum, _frame):
            self._reactor.callFromThread(self._reactor.stop)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)

    def _log_transfer(self, outcome) -> None:
        self.log.info("Shutdown hand-over: {message}", message=outcome[1])

    def _log_transfer_failure(self, failure) -> None:
        self.log.warn("Shutdown hand-over failed: {reason}", reason=failure.getErrorMessage())

    @defer.inlineCallbacks
    def stopService(self):
        """Graceful stop: refuse submissions, hand leadership away, let running jobs
        finish (then kill and report them failed), deliver results, close storage."""
        self.log.info("Stopping: no new jobs; handing over and finishing running jobs")
        self.api.draining = True
        if self.raft.status().role == "leader" and self.config.peers:
            transfer = self.api.transfer_leadership(0)
            transfer.addTimeout(SHUTDOWN_TRANSFER_SECONDS, self._reactor)
            transfer.addCallbacks(self._log_transfer, self._log_transfer_failure)
            yield transfer
        yield self.worker.wind_down(SHUTDOWN_GRACE_SECONDS)
        yield self.reporter.flush(SHUTDOWN_FLUSH_SECONDS)
        yield super().stopService()
        self.leader.close()
        self.transport.close()
