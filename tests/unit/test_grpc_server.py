"""GrpcServerService and the streams' bounds through a real grpc.aio server on the
real reactor: start and a clean stop (no thread left), a port in use refused loudly,
typed errors with their code in the trailing metadata, malformed requests refused as
INVALID_ARGUMENT, StreamJobs bounded in open streams and in how long it waits on a
reader that reads nothing (jobsched.net.streams).

The servicer's ClusterAPI is a fake holding generated jobs. Clients are synchronous
grpc stubs used from threads (a handler needs the reactor, which must not block).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import grpc
from twisted.internet import defer, threads
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.grpc_servicers import SchedulerServicer
from jobsched.interfaces import IApiServer
from jobsched.jobs.model import Job
from jobsched.jobs.table import JobPage
from jobsched.net import metadata
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.server import GrpcServerService, PortUnavailable
from jobsched.net.streams import StreamLimits
from tests.unit.test_cluster_api import wait_until

SMALL_WINDOWS = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1024),
    ("grpc.use_local_subchannel_pool", 1),
]
"""A reader that takes ≈ 1 KiB unread, so a stream it does not read blocks at once."""


class FakeJobs:
    """The part of ClusterAPI these handlers use, over `count` generated jobs."""

    def __init__(self, count: int) -> None:
        self.jobs = [
            Job(job_id=f"00000000-0000-4000-8000-{n:012d}", command=f"echo {n}", created_at_ms=n)
            for n in range(count)
        ]

    def list_jobs(self, query) -> JobPage:
        start = int(query.page_token or 0)
        end = start + query.page_size
        token = str(end) if end < len(self.jobs) else ""
        return JobPage(self.jobs[start:end], token, len(self.jobs))

    def get_job(self, job_id: str) -> Job:
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        raise errors.NotFound("Job not found")


def server_threads() -> set[str]:
    """Names of the threads a grpc.aio server brings: its loop and grpc's poller."""
    return {
        t.name
        for t in threading.enumerate()
        if t.name == "grpc-server" or "_poll_wrapper" in t.name
    }


class ServerTests(unittest.TestCase):
    def start(self, jobs: int = 10, streams: StreamLimits | None = None):
        from twisted.internet import reactor

        self.api = FakeJobs(jobs)
        self.streams = streams or StreamLimits()
        servicer = SchedulerServicer(self.api, None, ReactorBridge(reactor), self.streams)
        self.server = GrpcServerService("127.0.0.1", 0, [servicer.register], Wire(), reactor)
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.address = f"127.0.0.1:{self.server.port}"
        return self.server

    def stub(self, options=()) -> pb_grpc.SchedulerServiceStub:
        channel = grpc.insecure_channel(self.address, list(options))
        self.addCleanup(channel.close)
        return pb_grpc.SchedulerServiceStub(channel)

    @defer.inlineCallbacks
    def test_serves_and_stops_with_no_thread_left(self):
        yield wait_until(lambda: not server_threads(), "no server of another test is left")
        server = self.start()
        self.assertTrue(verifyObject(IApiServer, server))
        self.assertIn("grpc-server", server_threads())
        stub = self.stub()
        job_id = self.api.jobs[3].job_id
        reply = yield threads.deferToThread(
            stub.GetJobStatus, pb.GetJobStatusRequest(job_id=job_id), timeout=10
        )
        self.assertEqual((reply.job_id, reply.command), (job_id, "echo 3"))
        yield server.stopService()
        yield wait_until(lambda: not server_threads(), "grpc's poller thread ended", timeout=5)

    @defer.inlineCallbacks
    def test_a_port_in_use_is_refused_loudly(self):
        from twisted.internet import reactor

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = GrpcServerService("127.0.0.1", port, [], Wire(), reactor)
            with self.assertRaises(PortUnavailable) as caught:
                server.startService()
        self.assertEqual(
            str(caught.exception),
            f"cannot bind gRPC port 127.0.0.1:{port} (in use, or not an address of this host)",
        )
        yield wait_until(lambda: not server_threads(), "no thread left", timeout=5)

    def test_a_port_another_grpc_server_serves_is_refused(self):
        """grpc shares a port with SO_REUSEPORT by default; a node must not."""
        from twisted.internet import reactor

        self.start()
        second = GrpcServerService("127.0.0.1", self.server.port, [], Wire(), reactor)
        self.assertRaises(PortUnavailable, second.startService)

    @defer.inlineCallbacks
    def test_typed_errors_carry_their_code(self):
        self.start()
        stub = self.stub()
        request = pb.GetJobStatusRequest(job_id="00000000-0000-4000-8000-999999999999")
        with self.assertRaises(grpc.RpcError) as caught:
            yield threads.deferToThread(stub.GetJobStatus, request, timeout=10)
        error = caught.exception
        self.assertEqual(
            (error.code(), error.details()), (grpc.StatusCode.NOT_FOUND, "Job not found")
        )
        self.assertEqual(dict(error.trailing_metadata())[metadata.ERROR_CODE], "NOT_FOUND")

    @defer.inlineCallbacks
    def test_an_undecodable_request_is_invalid_argument(self):
        self.start()
        channel = grpc.insecure_channel(self.address)
        self.addCleanup(channel.close)
        raw = pb.GetJobStatusRequest(job_id="ok").SerializeToString().replace(b"ok", b"\xff\xfe")
        call = channel.unary_unary("/scheduler.SchedulerService/GetJobStatus")
        with self.assertRaises(grpc.RpcError) as caught:
            yield threads.deferToThread(call, raw, timeout=10)
        error = caught.exception
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(error.details().startswith("Malformed request"))
        self.assertEqual(dict(error.trailing_metadata())[metadata.ERROR_CODE], "INVALID_ARGUMENT")

    @defer.inlineCallbacks
    def test_a_stream_sends_every_job_in_order(self):
        self.start(jobs=250)
        stub = self.stub()
        streamed = yield threads.deferToThread(
            lambda: [info.job_id for info in stub.StreamJobs(pb.StreamJobsRequest(), timeout=30)]
        )
        self.assertEqual(streamed, [job.job_id for job in self.api.jobs])
        self.assertEqual((self.streams.open, self.streams.sent), (0, 250))

    @defer.inlineCallbacks
    def test_streams_beyond_the_bound_are_refused(self):
        self.start(jobs=500, streams=StreamLimits(max_open=2))
        stub = self.stub(SMALL_WINDOWS)
        unread = [stub.StreamJobs(pb.StreamJobsRequest()) for _ in range(2)]
        self.addCleanup(lambda: [call.cancel() for call in unread])
        yield wait_until(lambda: self.streams.writes_waiting == 2, "both streams blocked")
        refused = stub.StreamJobs(pb.StreamJobsRequest(), timeout=10)
        with self.assertRaises(grpc.RpcError) as caught:
            yield threads.deferToThread(list, refused)
        error = caught.exception
        self.assertEqual(
            (error.code(), error.details()),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many open streams; retry later"),
        )
        self.assertEqual(dict(error.trailing_metadata())[metadata.ERROR_CODE], "OVERLOADED")
        unread[0].cancel()
        yield wait_until(lambda: self.streams.open == 1, "a cancelled stream frees its place")

    @defer.inlineCallbacks
    def test_a_reader_that_stops_longer_than_the_bound_is_dropped(self):
        self.start(jobs=500, streams=StreamLimits(stall_seconds=0.5))
        stream = self.stub(SMALL_WINDOWS).StreamJobs(pb.StreamJobsRequest(), timeout=60)
        self.addCleanup(stream.cancel)
        first = yield threads.deferToThread(next, stream)
        self.assertEqual(first.job_id, self.api.jobs[0].job_id)
        yield wait_until(lambda: self.streams.dropped == 1, "the stalled stream was dropped")
        self.assertEqual(self.streams.open, 1)  # its place is held until its status is out
        received = [first]

        def read_rest():
            try:
                for info in stream:
                    received.append(info)
            except grpc.RpcError as error:
                return error

        error = yield threads.deferToThread(read_rest)
        self.assertIsNotNone(error, "the stream ended as if complete")
        self.assertEqual(error.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertEqual(error.details(), "Stream dropped: the reader read nothing for 0.5s")
        self.assertEqual(dict(error.trailing_metadata())[metadata.ERROR_CODE], "STREAM_STALLED")
        self.assertLess(len(received), 500)
        self.assertEqual(
            [info.job_id for info in received],
            [job.job_id for job in self.api.jobs[: len(received)]],
        )
        yield wait_until(lambda: self.streams.open == 0, "the dropped stream's place is free")


class StreamLimitsTests(unittest.TestCase):
    """The bounds alone, on an event loop of the test's own."""

    def run_on_loop(self, coroutine):
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        return loop.run_until_complete(coroutine)

    def test_slots_are_bounded_and_given_back(self):
        limits = StreamLimits(max_open=2)
        with limits.slot(), limits.slot():
            self.assertEqual(limits.open, 2)
            with self.assertRaises(errors.TooManyStreams) as caught, limits.slot():
                pass
            self.assertEqual(caught.exception.code, "OVERLOADED")
        self.assertEqual((limits.open, limits.refused), (0, 1))
        with limits.slot():
            self.assertEqual(limits.open, 1)

    def test_a_write_that_cannot_proceed_within_the_bound_raises_stream_stalled(self):
        class StuckContext:
            async def write(self, message):
                await asyncio.Event().wait()

        limits = StreamLimits(stall_seconds=0.05)
        with self.assertRaises(errors.StreamStalled) as caught:
            self.run_on_loop(limits.write(StuckContext(), "message"))
        self.assertEqual(caught.exception.code, "STREAM_STALLED")
        self.assertEqual((limits.dropped, limits.writes_waiting, limits.sent), (1, 0, 0))

    def test_streams_take_turns_at_the_message_rate(self):
        """The first page goes at once; the next waits for its turn (100 messages at
        1000/s: 0.1 s)."""
        limits = StreamLimits(messages_per_second=1000)

        async def two_pages():
            started = time.monotonic()
            await limits.pace(100)
            first = time.monotonic() - started
            await limits.pace(100)
            return first, time.monotonic() - started

        first, second = self.run_on_loop(two_pages())
        self.assertLess(first, 0.05)
        self.assertGreaterEqual(second, 0.09)
