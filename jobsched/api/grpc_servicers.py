"""gRPC servicers of SchedulerService and InternalService: thin adapters from the wire
to ClusterAPI, the router and the dispatcher.

Handlers are coroutines on the gRPC server's event loop (jobsched.net.server); they
await the reactor through the bridge for anything that touches state, so a waiting call
holds no thread. Typed errors become status codes (and a code in the trailing metadata)
here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Callable

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.status import abort_with
from jobsched.app import DRAIN_WAIT_SECONDS, SubmitRequest
from jobsched.errors import InvalidArgument, JobschedError
from jobsched.interfaces import IClusterAPI, IDispatcher, IRouter
from jobsched.jobs import wire
from jobsched.jobs.model import JobStatus
from jobsched.jobs.table import ListQuery
from jobsched.metrics import NodeMetrics
from jobsched.net.bridge import ReactorBridge
from jobsched.net.streams import STREAM_TURN_MESSAGES, StreamLimits
from jobsched.worker import output_wire

STREAM_PAGE_SIZE = 100
JOB_INFO_KEY = "grpc.JobInfo"
TRANSFER_HOP_SECONDS = 10.0
"""A transfer takes at most its 2 s catch-up deadline plus the target's election."""
DRAIN_HOP_SECONDS = DRAIN_WAIT_SECONDS + TRANSFER_HOP_SECONDS
OUTPUT_WAIT_SECONDS = 5.0
"""How long one read of a followed job's output waits for something new (the stream
then asks again, so a reader that went away is noticed within this)."""
OUTPUT_HOP_SECONDS = OUTPUT_WAIT_SECONDS + 10.0
MAX_READ_WAIT_MS = 30_000


def translates_errors(handler: Callable) -> Callable:
    """Turn a typed JobschedError raised by a handler into its gRPC status, and count
    it in the servicer's metrics (`self._metrics`)."""
    method = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self, request, context):
        try:
            return await handler(self, request, context)
        except JobschedError as error:
            self._metrics.rpc_errors.labels(method, error.code).inc()
            await abort_with(context, error)

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

    def __init__(
        self,
        api: IClusterAPI,
        router: IRouter,
        bridge: ReactorBridge,
        streams: StreamLimits | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._api = api
        self._router = router
        self._bridge = bridge
        self._streams = streams or StreamLimits()
        self._metrics = metrics if metrics is not None else NodeMetrics()

    def register(self, server) -> None:
        pb_grpc.add_SchedulerServiceServicer_to_server(self, server)

    @translates_errors
    async def SubmitJob(self, request, context):
        job = await self._bridge.call(self._api.submit, _submit_request(request))
        return pb.SubmitJobResponse(job_id=job.job_id, created_at_ms=job.created_at_ms)

    @translates_errors
    async def SubmitJobs(self, request, context):
        requests = [_submit_request(job) for job in request.jobs]
        jobs = await self._bridge.call(self._api.submit_many, requests)
        return pb.SubmitJobsResponse(
            jobs=[
                pb.SubmitJobResponse(job_id=job.job_id, created_at_ms=job.created_at_ms)
                for job in jobs
            ]
        )

    @translates_errors
    async def CancelJob(self, request, context):
        job_id = await self._bridge.call(self._api.cancel, request.job_id)
        return pb.CancelJobResponse(success=True, message=f"job {job_id} cancelled")

    @translates_errors
    async def GetJobStatus(self, request, context):
        job = await self._bridge.call(self._api.get_job, request.job_id)
        return wire.job_to_status_response(job)

    @translates_errors
    async def ListJobs(self, request, context):
        """Answered with the serialized response (each job's JobInfo serialized once
        per version of the job and kept by the table): no message is built."""
        page = await self._bridge.call(
            self._api.render_page, _list_query(request), JOB_INFO_KEY, wire.job_info_bytes
        )
        return wire.list_jobs_response_bytes(page.items, page.next_page_token, page.total_count)

    @translates_errors
    async def StreamJobs(self, request, context) -> None:
        """Every matching job in creation order, a page at a time from the reactor; a
        write the reader does not take within the stall bound drops the stream."""
        status = _status_or_none(request.status_filter)  # refused before streaming
        with self._streams.slot():
            infos = self._job_infos(status)
            try:
                async with contextlib.aclosing(infos):
                    async for info in infos:
                        await self._streams.write(context, info)
            except JobschedError as error:
                # ended while still holding its place: a stalled stream's status waits
                # behind what its reader has not read yet
                await abort_with(context, error)

    async def _job_infos(self, status: JobStatus | None) -> AsyncIterator[pb.JobInfo]:
        token = ""
        while True:
            query = ListQuery(page_size=STREAM_PAGE_SIZE, page_token=token, status=status)
            async with self._streams.page_fetch():
                page = await self._bridge.call(self._api.list_jobs, query)
            for first in range(0, len(page.jobs), STREAM_TURN_MESSAGES):
                turn = page.jobs[first : first + STREAM_TURN_MESSAGES]
                await self._streams.pace(len(turn))
                for job in turn:
                    yield wire.job_to_job_info(job)
            token = page.next_page_token
            if not token:
                return

    @translates_errors
    async def StreamJobOutput(self, request, context) -> None:
        """A job's output from the request's offsets; with `follow`, as it is produced
        until the job is over; a last chunk with `final` set (docs/api.md)."""
        with self._streams.slot():
            chunks = self._output_chunks(request)
            try:
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        await self._streams.write(context, chunk)
            except JobschedError as error:
                await abort_with(context, error)

    async def _output_chunks(self, request) -> AsyncIterator[pb.JobOutputChunk]:
        cursor = output_wire.cursor_of_request(request)
        wait = OUTPUT_WAIT_SECONDS if request.follow else 0.0
        while True:
            read = await self._bridge.call(
                self._router.read_output, request.job_id, cursor, wait, timeout=OUTPUT_HOP_SECONDS
            )
            for piece in read.pieces:
                await self._streams.pace(1)
                yield output_wire.piece_chunk(piece)
            cursor = read.cursor
            if read.final or not (request.follow or read.pieces):
                yield output_wire.final_chunk(read)
                return

    @translates_errors
    async def GetClusterStatus(self, request, context):
        view = await self._bridge.call(self._router.cluster_status)
        return pb.GetClusterStatusResponse(
            current_term=view.current_term,
            leader_id=view.leader_id,
            nodes=[pb.NodeInfo(**dataclasses.asdict(node)) for node in view.nodes],
            entry_forms=view.entry_forms,
        )

    @translates_errors
    async def TransferLeadership(self, request, context):
        success, message, new_leader_id = await self._bridge.call(
            self._api.transfer_leadership, request.target_node_id, timeout=TRANSFER_HOP_SECONDS
        )
        return pb.TransferLeadershipResponse(
            success=success, message=message, new_leader_id=new_leader_id
        )

    @translates_errors
    async def DrainNode(self, request, context):
        success, message = await self._bridge.call(self._api.drain, timeout=DRAIN_HOP_SECONDS)
        return pb.DrainNodeResponse(success=success, message=message)

    @translates_errors
    async def GetRaftLogEntries(self, request, context):
        view = await self._bridge.call(self._router.raft_log, request.start_index, request.limit)
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


def _submit_request(request: pb.SubmitJobRequest) -> SubmitRequest:
    return SubmitRequest(
        command=request.command,
        image=request.image if request.HasField("image") else None,
        timeout_seconds=request.timeout_seconds,
        idempotency_key=request.idempotency_key,
        max_attempts=request.max_attempts,
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

    def __init__(
        self,
        api: IClusterAPI,
        dispatcher: IDispatcher,
        bridge: ReactorBridge,
        router: IRouter | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._api = api
        self._dispatcher = dispatcher
        self._bridge = bridge
        self._router = router
        self._metrics = metrics if metrics is not None else NodeMetrics()

    def register(self, server) -> None:
        pb_grpc.add_InternalServiceServicer_to_server(self, server)

    @translates_errors
    async def GetJobOutput(self, request, context):
        job = await self._bridge.call(self._api.get_job, request.job_id)
        if not job.status.is_terminal:  # known, but no output held yet
            return pb.GetJobOutputResponse(job_id=job.job_id, found=False)
        return pb.GetJobOutputResponse(
            job_id=job.job_id, output=job.output, error=job.error, found=True
        )

    @translates_errors
    async def WorkerHeartbeat(self, request, context):
        await self._bridge.call(
            self._dispatcher.heartbeat,
            request.node_id,
            request.running_job_ids,
            request.free_slots,
            request.draining,
            request.incarnation,
            request.applied_index,
            request.entry_forms,
        )
        return pb.WorkerHeartbeatResponse()

    @translates_errors
    async def ReadJobOutput(self, request, context):
        """One read of a job's output from this node alone (the relay of another node's
        StreamJobOutput)."""
        wait = min(request.wait_ms, MAX_READ_WAIT_MS) / 1000
        read = await self._bridge.call(
            self._router.read_output,
            request.job_id,
            output_wire.cursor_of_read_request(request),
            wait,
            True,
            timeout=wait + 10.0,
        )
        return output_wire.read_response(read)

    @translates_errors
    async def ForwardJobStatus(self, request, context):
        await self._bridge.call(self._api.accept_results, request.updates)
        self._metrics.results_received.labels("grpc").inc()
        return pb.ForwardJobStatusResponse()
