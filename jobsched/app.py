"""ClusterAPI: the operations the gRPC and REST APIs both offer, with typed errors.

Runs on the reactor. Writes go through Raft on the leader (propose, wait for commit,
let the job table apply); reads come from this node's applied state; what only the
leader can answer is forwarded to it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from jobsched._proto import scheduler_pb2 as pb
from jobsched.api import errors
from jobsched.config import NodeConfig
from jobsched.interfaces import IClusterAPI, IRaftService
from jobsched.jobs import commands, validation
from jobsched.jobs.model import Job, JobStatus
from jobsched.jobs.table import JobPage, JobTable, ListQuery
from jobsched.leader_client import LeaderClient

MAX_ACTIVE_JOBS = 10_000
PEER_LIVENESS_SECONDS = 3.0
FORWARDED_WRITE_TIMEOUT = 8.0
DRAIN_WAIT_SECONDS = 60.0
DRAIN_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class NodeView:
    node_id: int
    address: str
    is_alive: bool
    role: str
    match_index: int
    draining: bool


@dataclass(frozen=True)
class ClusterView:
    current_term: int
    leader_id: int
    nodes: list[NodeView]


@dataclass(frozen=True)
class LogView:
    entries: list
    commit_index: int
    last_log_index: int
    first_available_index: int


@implementer(IClusterAPI)
class ClusterAPI:
    """Submit, cancel, query: one implementation behind every client interface."""

    def __init__(
        self,
        config: NodeConfig,
        raft: IRaftService,
        table: JobTable,
        clock: IReactorTime,
        leader: LeaderClient | None = None,
        storage=None,
    ) -> None:
        self._config = config
        self._storage = storage
        self._raft = raft
        self._table = table
        self._clock = clock
        self._leader = leader
        self.dispatcher = None  # set by the node once built (it reads `draining`)
        self.draining = False

    # ------------------------------------------------------------------ writes

    def submit(
        self,
        command: str,
        image: str | None = None,
        timeout_seconds: int = 0,
        idempotency_key: str = "",
        max_attempts: int = 0,
    ) -> defer.Deferred:
        """Deferred[Job] of the committed job (the existing one for a repeated key)."""
        return defer.maybeDeferred(
            self._submit, command, image, timeout_seconds, idempotency_key, max_attempts
        )

    def _check_submission(self, command, image, timeout_seconds, idempotency_key) -> str:
        """The checks every node makes before a submission goes anywhere; the image."""
        if self.draining:
            raise errors.Draining()
        validation.validate_command(command)
        image = image or self._config.image
        validation.validate_image(image, self._config.allowed_images)
        validation.validate_timeout(timeout_seconds, self._config.max_job_timeout)
        validation.validate_idempotency_key(idempotency_key)
        return image

    def _submit(self, command, image, timeout_seconds, idempotency_key, max_attempts):
        image = self._check_submission(command, image, timeout_seconds, idempotency_key)
        self._require_leader()
        if self._table.active_count() >= MAX_ACTIVE_JOBS:
            raise errors.QueueFull()
        entry = commands.submit_job(
            job_id=str(uuid.uuid4()),
            command=command,
            created_at_ms=self._now_ms(),
            image=image,
            timeout_seconds=timeout_seconds or self._config.job_timeout,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts or self._config.max_attempts,
        )
        return self._raft.propose(entry)

    @defer.inlineCallbacks
    def submit_anywhere(
        self,
        command: str,
        image: str | None = None,
        timeout_seconds: int = 0,
        idempotency_key: str = "",
    ):
        """Submit here when leading, else forward to the leader (REST writes on a
        follower). Deferred[(job_id, status label)]."""
        self._check_submission(command, image, timeout_seconds, idempotency_key)
        if self._is_leader() or self._leader is None:
            job = yield self.submit(command, image, timeout_seconds, idempotency_key)
            return job.job_id, job.status.label
        request = pb.SubmitJobRequest(
            command=command, timeout_seconds=timeout_seconds, idempotency_key=idempotency_key
        )
        if image:
            request.image = image
        reply = yield self._leader.scheduler("SubmitJob", request, FORWARDED_WRITE_TIMEOUT)
        return reply.job_id, JobStatus.PENDING.label

    def cancel(self, job_id: str) -> defer.Deferred:
        """Deferred[job_id] once the cancel is committed."""
        return defer.maybeDeferred(self._cancel, job_id)

    def _cancel(self, job_id):
        canonical = validation.require_uuid(job_id, "invalid job_id")
        self._require_leader()
        job = self._table.get(canonical)
        if job is None:
            raise errors.NotFound("job not found")
        if job.status.is_terminal:
            raise errors.AlreadyTerminal(job.status.label)
        proposed = self._raft.propose(commands.cancel_job(canonical, self._now_ms()))
        return proposed.addCallback(self._check_cancelled)

    @staticmethod
    def _check_cancelled(job: Job | None) -> str:
        if job is None:
            raise errors.NotFound("job not found")
        if job.status is not JobStatus.CANCELLED:
            raise errors.AlreadyTerminal(job.status.label)
        return job.job_id

    def cancel_anywhere(self, job_id: str) -> defer.Deferred:
        """Cancel here when leading, else forward to the leader. Deferred[job_id]."""
        if self._is_leader() or self._leader is None:
            return self.cancel(job_id)
        canonical = validation.parse_uuid(job_id) or job_id
        forwarded = self._leader.scheduler(
            "CancelJob", pb.CancelJobRequest(job_id=canonical), FORWARDED_WRITE_TIMEOUT
        )
        return forwarded.addCallback(lambda _reply: canonical)

    # ------------------------------------------------------------------ workers

    def worker_heartbeat(
        self, node_id: int, running_job_ids, free_slots: int, draining: bool, incarnation: int
    ) -> None:
        """A worker's periodic heartbeat, answered by the leader only."""
        self._require_leader()
        self.dispatcher.heartbeat(node_id, list(running_job_ids), free_slots, draining, incarnation)

    def accept_results(self, updates) -> defer.Deferred:
        """Results a follower's worker forwards: committed as one batch entry."""
        return defer.maybeDeferred(self._accept_results, list(updates))

    def _accept_results(self, updates):
        self._require_leader()
        if not updates:
            return None
        return self._raft.propose(commands.batch_update(updates))

    # ------------------------------------------------------------------ reads

    def get_job(self, job_id: str, invalid_message: str = "Invalid job ID") -> Job:
        job = self._table.get(validation.require_uuid(job_id, invalid_message))
        if job is None:
            raise errors.NotFound("Job not found")
        return job

    def list_jobs(self, query: ListQuery) -> JobPage:
        return self._table.list_jobs(query)

    def cluster_status(self) -> defer.Deferred:
        """Deferred[ClusterView]: the leader's view (followers forward the call)."""
        if self._is_leader() or self._leader is None:
            return defer.succeed(self.local_cluster_view())
        forwarded = self._leader.scheduler("GetClusterStatus", pb.GetClusterStatusRequest())
        return forwarded.addCallback(_cluster_view_from_wire)

    def local_cluster_view(self) -> ClusterView:
        """This node's own view: the full picture on a leader; on a follower self is
        alive and the others unknown (used when the leader cannot be reached)."""
        status = self._raft.status()
        progress = self._raft.peer_progress() if status.role == "leader" else {}
        nodes = [
            NodeView(
                node_id=self._config.node_id,
                address=self._config.advertise_addr,
                is_alive=True,
                role=status.role,
                match_index=status.last_log_index,
                draining=self.draining,
            )
        ]
        for peer_id, peer in self._config.peers.items():
            peer_state = progress.get(peer_id)
            alive = bool(
                peer_state
                and peer_state.last_contact_seconds is not None
                and peer_state.last_contact_seconds <= PEER_LIVENESS_SECONDS
            )
            nodes.append(
                NodeView(
                    node_id=peer_id,
                    address=str(peer),
                    is_alive=alive,
                    role=_peer_role(peer_id, status.leader_id, alive),
                    match_index=peer_state.match_index if peer_state else 0,
                    draining=self._peer_draining(peer_id),
                )
            )
        nodes.sort(key=lambda node: node.node_id)
        return ClusterView(status.current_term, status.leader_id, nodes)

    def _peer_draining(self, peer_id: int) -> bool:
        return bool(self.dispatcher and self.dispatcher.is_draining(peer_id))

    def raft_log(self, start_index: int, limit: int) -> defer.Deferred:
        """Deferred[LogView] of the leader's log (followers forward the call)."""
        if self._is_leader() or self._leader is None:
            return defer.succeed(self.local_raft_log(start_index, limit))
        request = pb.GetRaftLogEntriesRequest(start_index=start_index, limit=limit)
        forwarded = self._leader.scheduler("GetRaftLogEntries", request)
        return forwarded.addCallback(
            lambda reply: LogView(
                list(reply.entries),
                reply.commit_index,
                reply.last_log_index,
                reply.first_available_index,
            )
        )

    def local_raft_log(self, start_index: int, limit: int) -> LogView:
        status = self._raft.status()
        limit = 100 if limit == 0 else min(limit, 1000)
        start = start_index or status.first_log_index
        entries = self._raft.log_entries(max(start, status.first_log_index), limit)
        return LogView(
            entries=entries,
            commit_index=status.commit_index,
            last_log_index=status.last_log_index,
            first_available_index=status.first_log_index,
        )

    def transfer_leadership(self, target_node_id: int) -> defer.Deferred:
        """Deferred[(success, message, new_leader_id)] per API.md 2.8."""
        return self._raft.transfer_leadership(target_node_id)

    @defer.inlineCallbacks
    def drain(self, wait_seconds: float = DRAIN_WAIT_SECONDS):
        """DrainNode (API.md 2.9): refuse new jobs, wait for this node's running jobs,
        hand leadership away if leading. Deferred[(success, message)]."""
        self.draining = True
        if self.dispatcher is not None:
            self.dispatcher.request_round()
        deadline = self._clock.seconds() + wait_seconds
        while self._table.jobs_running_on(self._config.node_id):
            if self._clock.seconds() >= deadline:
                remaining = len(self._table.jobs_running_on(self._config.node_id))
                return False, f"Timed out waiting for {remaining} running jobs"
            yield task.deferLater(self._clock, DRAIN_POLL_SECONDS, lambda: None)
        if self._is_leader():
            success, message, _new_leader = yield self.transfer_leadership(0)
            if not success:
                return False, message
        return True, "Node drained successfully"

    def metrics(self) -> list[tuple[str, str, float]]:
        """(name, labels, value) samples of this node for GET /metrics."""
        status = self._raft.status()
        samples = [
            ("jobsched_raft_term", "", status.current_term),
            ("jobsched_raft_commit_index", "", status.commit_index),
            ("jobsched_raft_last_applied", "", status.last_applied),
            ("jobsched_raft_last_log_index", "", status.last_log_index),
            ("jobsched_raft_first_log_index", "", status.first_log_index),
            ("jobsched_raft_is_leader", "", int(status.role == "leader")),
            ("jobsched_node_draining", "", int(self.draining)),
        ]
        samples += [
            ("jobsched_jobs", f'status="{status_.label}"', self._table.count(status_))
            for status_ in JobStatus
        ]
        for attribute in ("commit_count", "entries_written"):
            if hasattr(self._storage, attribute):
                name = f"jobsched_storage_{attribute.replace('_count', 's')}_total"
                samples.append((name, "", getattr(self._storage, attribute)))
        return samples

    def raft_status(self):
        return self._raft.status()

    def is_ready(self) -> bool:
        status = self._raft.status()
        return bool(status.leader_id) and status.has_quorum

    # ------------------------------------------------------------------ helpers

    def _is_leader(self) -> bool:
        return self._raft.status().role == "leader"

    def _require_leader(self) -> None:
        status = self._raft.status()
        if status.role != "leader":
            raise errors.NotLeader(status.leader_id or None, status.leader_address)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)


def _peer_role(peer_id: int, leader_id: int, alive: bool) -> str:
    if peer_id == leader_id:
        return "leader"
    return "follower" if alive else "unknown"


def _cluster_view_from_wire(reply: pb.GetClusterStatusResponse) -> ClusterView:
    return ClusterView(
        reply.current_term,
        reply.leader_id,
        [
            NodeView(n.node_id, n.address, n.is_alive, n.role, n.match_index, n.draining)
            for n in reply.nodes
        ],
    )
