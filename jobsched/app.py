"""ClusterAPI: the operations the gRPC and REST APIs both offer, with typed errors.

Runs on the reactor. Writes go through Raft (propose, wait for commit, let the job
table apply); reads come from this node's applied state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import List, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from jobsched.api import errors
from jobsched.config import NodeConfig
from jobsched.interfaces import IClusterAPI, IRaftService
from jobsched.jobs import commands, validation
from jobsched.jobs.model import Job, JobStatus
from jobsched.jobs.table import JobPage, JobTable, ListQuery

MAX_ACTIVE_JOBS = 10_000
PEER_LIVENESS_SECONDS = 3.0


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
    nodes: List[NodeView]


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
    ) -> None:
        self._config = config
        self._raft = raft
        self._table = table
        self._clock = clock
        self.draining = False

    # ------------------------------------------------------------------ writes

    def submit(
        self,
        command: str,
        image: Optional[str] = None,
        timeout_seconds: int = 0,
        idempotency_key: str = "",
        max_attempts: int = 0,
    ) -> defer.Deferred:
        """Deferred[Job] of the committed job (the existing one for a repeated key)."""
        return defer.maybeDeferred(
            self._submit, command, image, timeout_seconds, idempotency_key, max_attempts
        )

    def _submit(self, command, image, timeout_seconds, idempotency_key, max_attempts):
        if self.draining:
            raise errors.Draining()
        validation.validate_command(command)
        image = image or self._config.image
        validation.validate_image(image, self._config.allowed_images)
        validation.validate_timeout(timeout_seconds, self._config.max_job_timeout)
        validation.validate_idempotency_key(idempotency_key)
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
    def _check_cancelled(job: Optional[Job]) -> str:
        if job is None:
            raise errors.NotFound("job not found")
        if job.status is not JobStatus.CANCELLED:
            raise errors.AlreadyTerminal(job.status.label)
        return job.job_id

    # ------------------------------------------------------------------ reads

    def get_job(self, job_id: str, invalid_message: str = "Invalid job ID") -> Job:
        job = self._table.get(validation.require_uuid(job_id, invalid_message))
        if job is None:
            raise errors.NotFound("Job not found")
        return job

    def list_jobs(self, query: ListQuery) -> JobPage:
        return self._table.list_jobs(query)

    def cluster_status(self) -> defer.Deferred:
        """Deferred[ClusterView] as this node sees the cluster."""
        return defer.succeed(self.local_cluster_view())

    def local_cluster_view(self) -> ClusterView:
        status = self._raft.status()
        is_leader = status.role == "leader"
        progress = self._raft.peer_progress() if is_leader else {}
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
                    draining=False,
                )
            )
        nodes.sort(key=lambda node: node.node_id)
        return ClusterView(status.current_term, status.leader_id, nodes)

    def raft_log(self, start_index: int, limit: int) -> LogView:
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

    def raft_status(self):
        return self._raft.status()

    def is_ready(self) -> bool:
        status = self._raft.status()
        return bool(status.leader_id) and status.has_quorum

    # ------------------------------------------------------------------ helpers

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
