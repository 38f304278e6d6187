"""gRPC servicers of SchedulerService and InternalService: thin adapters from the wire
to ClusterAPI, the router and the dispatcher.

Handlers run in grpcio's thread pool and hop onto the reactor for anything that touches
state. Typed errors become status codes (and a code in the trailing metadata) here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.status import abort_with
from jobsched.app import SubmitRequest
from jobsched.errors import InvalidArgument, JobschedError
from jobsched.interfaces import IClusterAPI, IDispatcher, IRouter
from jobsched.jobs import wire
from jobsched.jobs.model import JobStatus
from jobsched.jobs.table import ListQuery
from jobsched.net.bridge import ReactorBridge

STREAM_PAGE_SIZE = 200


def translates_errors(handler: Callable) -> Callable:
    """Turn a typed JobschedError raised by a handler into its gRPC status."""

    @functools.wraps(handler)
    def wrapper(self, request, context):
        try:
            return handler(self, request, context)
        except JobschedError as error:
            abort_with(context, error)

    return wrapper


def _status_or_none(number: int) -> JobStatus | None:
    """The status a filter names (0 = any); an unknown number is refused."""
    if not number:
        return None
    try:
        return JobStatus(number)
    except ValueError:
        raise InvalidArgument(f"unknown status_filter {number}") from None


class SchedulerServicer(pb_grpc.SchedulerServiceServicer):
    """Client-facing SchedulerService."""

    def __init__(self, api: IClusterAPI, router: IRouter, bridge: ReactorBridge) -> None:
        self._api = api
        self._router = router
        self._bridge = bridge

    def register(self, server) -> None:
        pb_grpc.add_SchedulerServiceServicer_to_server(self, server)

    @translates_errors
    def SubmitJob(self, request, context):
        submit = SubmitRequest(
            command=request.command,
            image=request.image if request.HasField("image") else None,
            timeout_seconds=request.timeout_seconds,
            idempotency_key=request.idempotency_key,
            max_attempts=request.max_attempts,
        )
        job = self._bridge.on_reactor(self._api.submit, submit)
        return pb.SubmitJobResponse(job_id=job.job_id, created_at_ms=job.created_at_ms)

    @translates_errors
    def CancelJob(self, request, context):
        job_id = self._bridge.on_reactor(self._api.cancel, request.job_id)
        return pb.CancelJobResponse(success=True, message=f"job {job_id} cancelled")

    @translates_errors
    def GetJobStatus(self, request, context):
        job = self._bridge.on_reactor(self._api.get_job, request.job_id)
        return wire.job_to_status_response(job)

    @translates_errors
    def ListJobs(self, request, context):
        page = self._bridge.on_reactor(self._api.list_jobs, _list_query(request))
        return pb.ListJobsResponse(
            jobs=[wire.job_to_job_info(job) for job in page.jobs],
            next_page_token=page.next_page_token,
            total_count=page.total_count,
        )

    @translates_errors
    def StreamJobs(self, request, context) -> Iterator[pb.JobInfo]:
        status = _status_or_none(request.status_filter)  # refused before streaming
        return self._stream_jobs(status, context)

    def _stream_jobs(self, status: JobStatus | None, context) -> Iterator[pb.JobInfo]:
        token = ""
        while context.is_active():
            query = ListQuery(page_size=STREAM_PAGE_SIZE, page_token=token, status=status)
            page = self._bridge.on_reactor(self._api.list_jobs, query)
            for job in page.jobs:
                yield wire.job_to_job_info(job)
            token = page.next_page_token
            if not token:
                return

    @translates_errors
    def GetClusterStatus(self, request, context):
        view = self._bridge.on_reactor(self._router.cluster_status)
        return pb.GetClusterStatusResponse(
            current_term=view.current_term,
            leader_id=view.leader_id,
            nodes=[pb.NodeInfo(**dataclasses.asdict(node)) for node in view.nodes],
        )

    @translates_errors
    def TransferLeadership(self, request, context):
        success, message, new_leader_id = self._bridge.on_reactor(
            self._api.transfer_leadership, request.target_node_id
        )
        return pb.TransferLeadershipResponse(
            success=success, message=message, new_leader_id=new_leader_id
        )

    @translates_errors
    def DrainNode(self, request, context):
        success, message = self._bridge.on_reactor(self._api.drain)
        return pb.DrainNodeResponse(success=success, message=message)

    @translates_errors
    def GetRaftLogEntries(self, request, context):
        view = self._bridge.on_reactor(self._router.raft_log, request.start_index, request.limit)
        return pb.GetRaftLogEntriesResponse(
            entries=[
                pb.RaftLogEntryInfo(
                    index=entry.index,
                    term=entry.term,
                    command=entry.command,
                    is_committed=entry.index <= view.commit_index,
                )
                for entry in view.entries
            ],
            commit_index=view.commit_index,
            last_log_index=view.last_log_index,
            first_available_index=view.first_available_index,
        )


def _list_query(request: pb.ListJobsRequest) -> ListQuery:
    return ListQuery(
        page_size=request.page_size,
        page_token=request.page_token,
        status=_status_or_none(request.status_filter),
        worker_id=request.worker_id_filter,
        command_substring=request.command_filter,
        created_after_ms=request.created_after_ms,
        created_before_ms=request.created_before_ms,
    )


class InternalServicer(pb_grpc.InternalServiceServicer):
    """Node-to-node InternalService."""

    def __init__(self, api: IClusterAPI, dispatcher: IDispatcher, bridge: ReactorBridge) -> None:
        self._api = api
        self._dispatcher = dispatcher
        self._bridge = bridge

    def register(self, server) -> None:
        pb_grpc.add_InternalServiceServicer_to_server(self, server)

    @translates_errors
    def GetJobOutput(self, request, context):
        job = self._bridge.on_reactor(self._api.get_job, request.job_id)
        if not job.status.is_terminal:  # known, but no output held yet
            return pb.GetJobOutputResponse(job_id=job.job_id, found=False)
        return pb.GetJobOutputResponse(
            job_id=job.job_id, output=job.output, error=job.error, found=True
        )

    @translates_errors
    def WorkerHeartbeat(self, request, context):
        self._bridge.on_reactor(
            self._dispatcher.heartbeat,
            request.node_id,
            request.running_job_ids,
            request.free_slots,
            request.draining,
            request.incarnation,
        )
        return pb.WorkerHeartbeatResponse()

    @translates_errors
    def ForwardJobStatus(self, request, context):
        self._bridge.on_reactor(self._api.accept_results, request.updates)
        return pb.ForwardJobStatusResponse()
