"""Router: the one place that decides "here, or at the leader" (or, for a running
job's output, "here, or at the node running it").

Writes from REST, the cluster and log views, worker results and worker heartbeats all
come through here. On the leader they are answered by this node's ClusterAPI (or, for
heartbeats, need no call at all); on a follower they go to the leader through the
LeaderClient, and the leader's answer (or typed error) comes back unchanged.

A job's output is read from this node's table once the job is over (every node holds
it) and from the live buffer of the node running it while it runs: that node, never the
leader, is asked when it is another one, so the leader's loss does not cut a stream.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from jobsched._proto import scheduler_pb2 as pb
from jobsched.app import ClusterView, LogEntryView, LogView, NodeView, SubmitRequest
from jobsched.interfaces import (
    IClusterAPI,
    ILeaderClient,
    IPeerClient,
    IPeerResults,
    IRouter,
)
from jobsched.jobs import validation
from jobsched.jobs.model import JobStatus
from jobsched.worker import output_wire
from jobsched.worker.live_output import OutputCursor, OutputRead
from jobsched.worker.output_reader import LocalOutputReader

FORWARDED_WRITE_TIMEOUT_SECONDS = 8.0
RESULTS_TIMEOUT_SECONDS = 8.0
TRANSFER_TIMEOUT_SECONDS = 15.0
OUTPUT_CALL_MARGIN_SECONDS = 5.0
"""A relayed output read may take its wait plus this before it counts as failed."""
OUTPUT_RETRY_SECONDS = 0.5
"""After a failed relayed read, how long the next read waits (the worker may be gone;
the table will say where the job went)."""


@implementer(IRouter)
class Router:
    """Answers here when this node leads, else asks the leader."""

    def __init__(
        self,
        api: IClusterAPI,
        leader: ILeaderClient,
        output: LocalOutputReader | None = None,
        peers: IPeerClient | None = None,
        clock: IReactorTime | None = None,
        peer_results: IPeerResults | None = None,
    ) -> None:
        self._api = api
        self._peer_results = peer_results
        self._leader = leader
        self._output = output
        self._peers = peers
        self._clock = clock

    def submit(self, request: SubmitRequest) -> defer.Deferred:
        """Deferred[(job_id, status label)] of the committed job."""
        return defer.maybeDeferred(self._submit, request)

    @defer.inlineCallbacks
    def _submit(self, request: SubmitRequest):
        self._api.check_submission(request)  # a bad request is refused here, not forwarded
        if self._api.is_leader():
            job = yield self._api.submit(request)
            return job.job_id, job.status.label
        wire = _submit_to_wire(request)
        reply = yield self._leader.scheduler("SubmitJob", wire, FORWARDED_WRITE_TIMEOUT_SECONDS)
        return reply.job_id, JobStatus.PENDING.label

    def submit_many(self, requests) -> defer.Deferred:
        """Deferred[list of job ids] of a committed batch (SubmitJobs), in order."""
        return defer.maybeDeferred(self._submit_many, list(requests))

    @defer.inlineCallbacks
    def _submit_many(self, requests: list[SubmitRequest]):
        self._api.check_batch(requests)  # a bad batch is refused here, not forwarded
        if self._api.is_leader():
            jobs = yield self._api.submit_many(requests)
            return [job.job_id for job in jobs]
        wire = pb.SubmitJobsRequest(jobs=[_submit_to_wire(request) for request in requests])
        reply = yield self._leader.scheduler("SubmitJobs", wire, FORWARDED_WRITE_TIMEOUT_SECONDS)
        return [job.job_id for job in reply.jobs]

    def cancel(self, job_id: str) -> defer.Deferred:
        """Deferred[job_id] once the cancel is committed."""
        if self._api.is_leader():
            return self._api.cancel(job_id)
        forwarded = self._leader.scheduler(
            "CancelJob", pb.CancelJobRequest(job_id=job_id), FORWARDED_WRITE_TIMEOUT_SECONDS
        )
        return forwarded.addCallback(lambda _reply: validation.parse_uuid(job_id) or job_id)

    def cluster_status(self) -> defer.Deferred:
        """Deferred[ClusterView]: the leader's view."""
        if self._api.is_leader():
            return defer.succeed(self._api.cluster_view())
        forwarded = self._leader.scheduler("GetClusterStatus", pb.GetClusterStatusRequest())
        return forwarded.addCallback(_cluster_view_from_wire)

    def raft_log(self, start_index: int, limit: int) -> defer.Deferred:
        """Deferred[LogView] of the leader's log."""
        if self._api.is_leader():
            return defer.succeed(self._api.raft_log_view(start_index, limit))
        request = pb.GetRaftLogEntriesRequest(start_index=start_index, limit=limit)
        return self._leader.scheduler("GetRaftLogEntries", request).addCallback(_log_view_from_wire)

    def transfer_leadership(self, target_node_id: int) -> defer.Deferred:
        """Deferred[(success, message, new_leader_id)]: the leader hands over (a
        dashboard on any node can ask)."""
        if self._api.is_leader():
            return self._api.transfer_leadership(target_node_id)
        request = pb.TransferLeadershipRequest(target_node_id=target_node_id)
        forwarded = self._leader.scheduler("TransferLeadership", request, TRANSFER_TIMEOUT_SECONDS)
        return forwarded.addCallback(
            lambda reply: (reply.success, reply.message, reply.new_leader_id)
        )

    def deliver_results(self, updates) -> defer.Deferred:
        """Hand finished attempts to the leader; fires once they are committed. A
        follower sends them back on its leader's peer-port connection when there is
        one that takes them, else as a ForwardJobStatus call."""
        if self._api.is_leader():
            return self._api.accept_results(updates)
        request = pb.ForwardJobStatusRequest(updates=updates)
        if self._peer_results is not None:
            sent = self._peer_results.send_results(request, RESULTS_TIMEOUT_SECONDS)
            if sent is not None:
                return sent
        return self._leader.internal("ForwardJobStatus", request, RESULTS_TIMEOUT_SECONDS)

    def send_heartbeat(self, request, timeout: float) -> defer.Deferred:
        """Tell the leader this node's worker is alive (a leader's own worker needs
        no heartbeat: it counts as live while it leads)."""
        if self._api.is_leader():
            return defer.succeed(None)
        return self._leader.internal("WorkerHeartbeat", request, timeout)

    def read_output(
        self, job_id: str, cursor: OutputCursor, wait: float, relayed: bool = False
    ) -> defer.Deferred:
        """Deferred[OutputRead] after `cursor`: from this node unless the job runs on
        another one (and this read is not itself relayed), then from that node."""
        return defer.maybeDeferred(self._read_output, job_id, cursor, wait, relayed)

    def _read_output(self, job_id: str, cursor: OutputCursor, wait: float, relayed: bool):
        if relayed and self._output is not None:
            # The leader relays a read once it has applied the job's assignment to this
            # node, which may apply it a moment later: a job not known here yet is
            # waited for like any change of it.
            job_id = validation.require_uuid(job_id, "Invalid job ID")
            return self._output.read(job_id, cursor, wait)
        job = self._api.get_job(job_id)
        if self._output is None:
            return defer.succeed(OutputRead((), cursor, job.status, job.exit_code))
        elsewhere = job.status is JobStatus.RUNNING and not self._output.runs_here(job)
        if not elsewhere or self._peers is None:
            return self._output.read(job.job_id, cursor, wait)
        request = output_wire.read_request(job.job_id, cursor, wait)
        call = self._peers.internal(
            job.assigned_worker, "ReadJobOutput", request, wait + OUTPUT_CALL_MARGIN_SECONDS
        )
        call.addCallback(output_wire.read_of_response)
        call.addErrback(self._relay_failed, job.job_id, cursor, wait)
        return call

    def _relay_failed(self, failure, job_id: str, cursor: OutputCursor, wait: float):
        """The node running the job did not answer: read here after a pause (nothing
        new unless the table moved on meanwhile)."""
        if failure.check(defer.CancelledError):
            return failure
        pause = min(wait, OUTPUT_RETRY_SECONDS)
        if pause <= 0 or self._clock is None:
            return self._output.read_now(job_id, cursor)
        return task.deferLater(self._clock, pause, self._output.read_now, job_id, cursor)


def _submit_to_wire(request: SubmitRequest) -> pb.SubmitJobRequest:
    wire = pb.SubmitJobRequest(
        command=request.command,
        timeout_seconds=request.timeout_seconds,
        idempotency_key=request.idempotency_key,
        max_attempts=request.max_attempts,
    )
    if request.image:
        wire.image = request.image
    return wire


def _cluster_view_from_wire(reply: pb.GetClusterStatusResponse) -> ClusterView:
    return ClusterView(
        reply.current_term,
        reply.leader_id,
        [
            NodeView(
                n.node_id, n.address, n.is_alive, n.role, n.match_index, n.draining, n.entry_forms
            )
            for n in reply.nodes
        ],
        reply.entry_forms or 1,
    )


def _log_view_from_wire(reply: pb.GetRaftLogEntriesResponse) -> LogView:
    return LogView(
        [LogEntryView(entry.index, entry.term, entry.command) for entry in reply.entries],
        reply.commit_index,
        reply.last_log_index,
        reply.first_available_index,
    )
