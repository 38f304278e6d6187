"""ClusterAPI: the operations both client APIs offer, answered by this node.

Runs on the reactor. Writes go through Raft on the leader (propose, wait for commit,
let the job table apply); reads come from this node's applied state. Whether a call is
answered here or by the leader is decided by the router (jobsched.routing), not here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched.config import NodeConfig
from jobsched.interfaces import IClusterAPI, IJobTable, IRaftService
from jobsched.jobs import commands, validation
from jobsched.jobs.model import Job, JobStatus
from jobsched.jobs.table import JobPage, ListQuery, RenderedPage, Renderer
from jobsched.raft.service import propose_each
from jobsched.registry import WorkerRegistry

MAX_BATCH_JOBS = 1000
ALLOWED_IMAGES_KEPT = 1000
Release = Callable[[object], object]
Placer = Callable[[list, int], Release | None]
ResultsPlacer = Callable[[list, int], tuple[list, Release]]
PEER_LIVENESS_SECONDS = 3.0
DRAIN_WAIT_SECONDS = 60.0
DRAIN_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class SubmitRequest:
    """A job as a client asks for it; 0 and "" mean "the server default"."""

    command: str
    image: str | None = None
    timeout_seconds: int = 0
    idempotency_key: str = ""
    max_attempts: int = 0


@dataclass(frozen=True)
class NodeView:
    node_id: int
    address: str
    is_alive: bool
    role: str
    match_index: int
    draining: bool
    entry_forms: int = 0  # the newest entry forms it applies, as known here (0: not known)


@dataclass(frozen=True)
class ClusterView:
    current_term: int
    leader_id: int
    nodes: list[NodeView]
    entry_forms: int = 1  # the entry forms the cluster writes (replicated)


@dataclass(frozen=True)
class LogEntryView:
    index: int
    term: int
    command: pb.Command


@dataclass(frozen=True)
class LogView:
    entries: list[LogEntryView]
    commit_index: int
    last_log_index: int
    first_available_index: int


class DrainFlag:
    """Whether this node drains: it refuses new jobs and is assigned none."""

    def __init__(self) -> None:
        self.active = False


@implementer(IClusterAPI)
class ClusterAPI:
    """Submit, cancel, query: one implementation behind every client interface."""

    def __init__(
        self,
        config: NodeConfig,
        raft: IRaftService,
        table: IJobTable,
        registry: WorkerRegistry,
        drain_flag: DrainFlag,
        clock: IReactorTime,
    ) -> None:
        self._config = config
        self._raft = raft
        self._table = table
        self._registry = registry
        self._drain_flag = drain_flag
        self._clock = clock
        self._placer: Placer | None = None
        self._results_placer: ResultsPlacer | None = None
        self._images_allowed: set[str] = set()  # valid and allowed: checked once

    def use_placer(self, placer: Placer, results_placer: ResultsPlacer | None = None) -> None:
        """Let `placer(jobs, now_ms)` assign new jobs in their submit entry when a
        worker has a free slot (the leader's dispatcher); it returns the release of
        the slots it reserved, or None. `results_placer(updates, now_ms)` hears of
        results being proposed (their slots free up) and returns the assignments to
        propose with them and their release."""
        self._placer = placer
        self._results_placer = results_placer

    @property
    def draining(self) -> bool:
        return self._drain_flag.active

    # ------------------------------------------------------------------ writes

    def check_submission(self, request: SubmitRequest) -> SubmitRequest:
        """The checks every node makes before a submission goes anywhere; returns the
        request with the server's defaults filled in."""
        if self.draining:
            raise errors.Draining()
        validation.validate_command(request.command)
        image = request.image or self._config.image
        if image not in self._images_allowed:
            validation.validate_image(image, self._config.allowed_images)
            if len(self._images_allowed) < ALLOWED_IMAGES_KEPT:
                self._images_allowed.add(image)
        validation.validate_timeout(request.timeout_seconds, self._config.max_job_timeout)
        validation.validate_idempotency_key(request.idempotency_key)
        validation.validate_max_attempts(request.max_attempts)
        return replace(
            request,
            image=image,
            timeout_seconds=request.timeout_seconds or self._config.job_timeout,
            max_attempts=request.max_attempts or self._config.max_attempts,
        )

    def submit(self, request: SubmitRequest) -> defer.Deferred:
        """Deferred[Job] of the committed job (the existing one for a repeated key)."""
        return defer.maybeDeferred(self._submit, request)

    def _submit(self, request: SubmitRequest) -> defer.Deferred:
        request = self.check_submission(request)
        self._require_leader()
        self._require_room(1)
        now_ms = self._now_ms()
        job = self._submit_command(request, now_ms)
        return self._propose_placed([job], now_ms, lambda: commands.entry(submit_job=job))

    def check_batch(self, requests: Sequence[SubmitRequest]) -> list[SubmitRequest]:
        """`check_submission` for each job of a batch (1 to MAX_BATCH_JOBS of them); the
        first refused job's error names its place: `job <i>: <message>` (from 0)."""
        if self.draining:
            raise errors.Draining()
        if not 1 <= len(requests) <= MAX_BATCH_JOBS:
            raise errors.InvalidArgument(
                f"a batch holds 1 to {MAX_BATCH_JOBS} jobs (got {len(requests)})"
            )
        checked = []
        for i, request in enumerate(requests):
            try:
                checked.append(self.check_submission(request))
            except errors.JobschedError as error:
                raise type(error)(f"job {i}: {error.message}") from None
        return checked

    def submit_many(self, requests: Sequence[SubmitRequest]) -> defer.Deferred:
        """Deferred[list[Job]] in request order, all committed in one entry (a repeated
        idempotency key gives the existing job); nothing is submitted if one is refused."""
        return defer.maybeDeferred(self._submit_many, requests)

    def _submit_many(self, requests: Sequence[SubmitRequest]) -> defer.Deferred:
        checked = self.check_batch(requests)
        self._require_leader()
        self._require_room(len(checked))
        now_ms = self._now_ms()
        jobs = [self._submit_command(request, now_ms) for request in checked]
        if self._table.entry_forms() < commands.BATCHED_FORMS:
            # a node might not apply a SubmitJobs entry: one entry per job, in order
            return propose_each(self._raft, [commands.entry(submit_job=job) for job in jobs])
        return self._propose_placed(jobs, now_ms, lambda: commands.submit_jobs(jobs))

    def _propose_placed(
        self, jobs: list, now_ms: int, entry: Callable[[], bytes]
    ) -> defer.Deferred:
        """Propose the entry of new `jobs`, made by `entry()` once the placer has set
        their assignments; the placer's slots are released after."""
        release = self._placer(jobs, now_ms) if self._placer is not None else None
        proposed = self._raft.propose(entry())
        if release is not None:
            proposed.addBoth(release)
        return proposed

    def _require_room(self, jobs: int) -> None:
        """Each job counts against the active-job cap (`--max-active-jobs`)."""
        if self._table.active_count() + jobs > self._config.max_active_jobs:
            raise errors.QueueFull()

    @staticmethod
    def _submit_command(request: SubmitRequest, now_ms: int):
        return commands.job_to_submit(
            job_id=str(uuid.uuid4()),
            command=request.command,
            created_at_ms=now_ms,
            image=request.image,
            timeout_seconds=request.timeout_seconds,
            idempotency_key=request.idempotency_key,
            max_attempts=request.max_attempts,
        )

    def cancel(self, job_id: str) -> defer.Deferred:
        """Deferred[job_id] (canonical form) once the cancel is committed."""
        return defer.maybeDeferred(self._cancel, job_id)

    def _cancel(self, job_id: str) -> defer.Deferred:
        canonical = validation.require_uuid(job_id, "invalid job_id")
        self._require_leader()
        job = self._table.get(canonical)
        if job is None:
            raise errors.NotFound("job not found")
        if job.status.is_terminal:
            raise errors.AlreadyTerminal.for_status(job.status.label)
        proposed = self._raft.propose(commands.cancel_job(canonical, self._now_ms()))
        return proposed.addCallback(_check_cancelled)

    def accept_results(self, updates) -> defer.Deferred:
        """Finished attempts (UpdateJobStatusCommand messages) of any worker, committed
        as one batch entry with the next assignments of the slots they free; only the
        leader accepts them."""
        return defer.maybeDeferred(self._accept_results, list(updates))

    def _accept_results(self, updates: list) -> defer.Deferred | None:
        self._require_leader()
        if not updates:
            return None
        if self._results_placer is None:
            return self._raft.propose(commands.batch_update(updates))
        assignments, release = self._results_placer(updates, self._now_ms())
        return self._raft.propose(commands.batch_update(updates, assignments)).addBoth(release)

    def transfer_leadership(self, target_node_id: int) -> defer.Deferred:
        """Deferred[(success, message, new_leader_id)] per API.md 2.8; the leader picks
        (target 0) among peers that do not drain, which would refuse to lead."""
        draining = {peer for peer in self._config.peers if self._registry.is_draining(peer)}
        return self._raft.transfer_leadership(target_node_id, frozenset(draining))

    @defer.inlineCallbacks
    def drain(self, wait_seconds: float = DRAIN_WAIT_SECONDS):
        """DrainNode (API.md 2.9): refuse new jobs, wait for this node's running jobs,
        hand leadership away if leading. Deferred[(success, message)]."""
        self._drain_flag.active = True
        self._raft.refuse_leadership()
        deadline = self._clock.seconds() + wait_seconds
        node_id = self._config.node_id
        while self._table.jobs_running_on(node_id):
            if self._clock.seconds() >= deadline:
                remaining = len(self._table.jobs_running_on(node_id))
                return False, f"Timed out waiting for {remaining} running jobs"
            yield task.deferLater(self._clock, DRAIN_POLL_SECONDS, lambda: None)
        if self.is_leader():
            success, message, _new_leader = yield self.transfer_leadership(0)
            if not success:
                return False, message
        return True, "Node drained successfully"

    # ------------------------------------------------------------------ reads

    def get_job(self, job_id: str, invalid_message: str = "Invalid job ID") -> Job:
        """The job, or InvalidArgument(`invalid_message`) / NotFound."""
        job = self._table.get(validation.require_uuid(job_id, invalid_message))
        if job is None:
            raise errors.NotFound("Job not found")
        return job

    def list_jobs(self, query: ListQuery) -> JobPage:
        return self._table.list_jobs(query)

    def render_page(self, query: ListQuery, key: str, render: Renderer) -> RenderedPage:
        return self._table.render_page(query, key, render)

    def render_all(self, query: ListQuery, key: str, render: Renderer) -> list[bytes]:
        return self._table.render_all(query, key, render)

    def job_counts(self) -> dict[JobStatus, int]:
        return {status: self._table.count(status) for status in JobStatus}

    def cluster_view(self) -> ClusterView:
        """This node's view: the full picture on a leader; on a follower self is alive
        and the others unknown (shown when the leader cannot be reached)."""
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
                entry_forms=commands.ENTRY_FORMS,
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
                    draining=self._registry.is_draining(peer_id),
                    entry_forms=self._registry.entry_forms(peer_id),
                )
            )
        nodes.sort(key=lambda node: node.node_id)
        return ClusterView(status.current_term, status.leader_id, nodes, self._table.entry_forms())

    def raft_log_view(self, start_index: int, limit: int) -> LogView:
        """GetRaftLogEntries on this node's log: limit 0 -> 100, capped at 1000;
        start 0 -> the first index still held."""
        status = self._raft.status()
        limit = 100 if limit == 0 else min(limit, 1000)
        start = max(start_index or status.first_log_index, status.first_log_index)
        return LogView(
            entries=[
                LogEntryView(entry.index, entry.term, pb.Command.FromString(entry.command))
                for entry in self._raft.log_entries(start, limit)
            ],
            commit_index=status.commit_index,
            last_log_index=status.last_log_index,
            first_available_index=status.first_log_index,
        )

    def raft_status(self):
        """This node's RaftStatus."""
        return self._raft.status()

    def is_leader(self) -> bool:
        return self._raft.is_leader()

    def is_ready(self) -> bool:
        """A leader is known and this node is in touch with a quorum."""
        status = self._raft.status()
        return bool(status.leader_id) and status.has_quorum

    # ------------------------------------------------------------------ helpers

    def _require_leader(self) -> None:
        if not self._raft.is_leader():
            raise errors.NotLeader(self._raft.status().leader_address)

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)


def _check_cancelled(job: Job | None) -> str:
    if job is None:
        raise errors.NotFound("job not found")
    if job.status is not JobStatus.CANCELLED:
        raise errors.AlreadyTerminal.for_status(job.status.label)
    return job.job_id


def _peer_role(peer_id: int, leader_id: int, alive: bool) -> str:
    if peer_id == leader_id:
        return "leader"
    return "follower" if alive else "unknown"
