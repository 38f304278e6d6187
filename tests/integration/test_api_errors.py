"""Every error row of API.md 2.1-2.6 and 3.3-3.4 a single node can produce, over gRPC
and REST: exact code or status, exact message, and the job table unchanged afterwards.

The tests share one node (started by the first of them, killed by PID when the test
process exits); each asserts only on the jobs it created, or on jobs no request can
change any more (finished ones), so what earlier tests left running cannot disturb it.
"""

import atexit
import functools
import shutil
import tempfile
import uuid
from pathlib import Path

import grpc
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.net.outbound import CallFailed, call_deferred
from tests.integration.jobwait import wait_finished
from tests.nodeproc import Node, NodeFactory

FINISHED_LABELS = {"completed", "failed", "cancelled"}


@functools.cache
def shared_node() -> Node:
    """The node every test of this module talks to, started on first use."""
    workdir = Path(tempfile.mkdtemp(prefix="jobsched-api-errors-"))
    atexit.register(shutil.rmtree, workdir, True)
    node = NodeFactory(workdir).start(
        "--executor",
        "process",
        "--max-job-timeout",
        "600",
        "--allowed-images",
        "alpine:*,jobsched-test/*",
        "--image",
        "alpine:latest",
    )
    atexit.register(node.reap)  # runs before the rmtree (atexit is last in, first out)
    return node


class SharedNodeTestCase(unittest.TestCase):
    """Talks to the shared node through clients of the test's own."""

    timeout = 120

    async def setUp(self) -> None:
        self.node = shared_node().attach(self)
        await self.node.until_ready()

    async def submit(self, command: str) -> str:
        reply = await self.node.call("SubmitJob", pb.SubmitJobRequest(command=command))
        return reply.job_id

    async def finished_job(self) -> str:
        """A job of this test's own that has completed."""
        job_id = await self.submit("echo done")
        await wait_finished(self.node, job_id)
        return job_id

    async def call_error(self, method: str, request) -> tuple:
        """(code, details) of a gRPC call that must fail."""
        with self.assertRaises(CallFailed) as caught:
            await self.node.call(method, request, timeout=10)
        return caught.exception.code, caught.exception.details

    async def table(self) -> tuple[set, dict]:
        """The ids of every job, and every finished job as the REST API shows it.

        A job still pending or running may move on while a test runs; a finished one
        never changes, and no refused request may add, remove or change a job.
        """
        answer = await self.node.rest("GET", "/api/jobs")  # without a limit: every job
        self.assertEqual(answer.status, 200)
        finished = {job["id"]: job for job in answer.body if job["status"] in FINISHED_LABELS}
        return {job["id"] for job in answer.body}, finished

    async def assertTableUnchanged(self, before: tuple[set, dict]) -> None:
        ids_before, finished_before = before
        ids_after, finished_after = await self.table()
        self.assertEqual(ids_after, ids_before)
        self.assertEqual(
            {job_id: finished_after.get(job_id) for job_id in finished_before}, finished_before
        )


def add_cases(cls: type, prefix: str, cases: dict, check) -> None:
    """One test method `<prefix>_<case name>` per case, each running `check(self, case)`."""
    for name, case in cases.items():

        async def test(self, case=case):
            await check(self, case)

        test.__name__ = f"{prefix}_{name}"
        test.__doc__ = f"{check.__doc__} ({name.replace('_', ' ')})"
        setattr(cls, test.__name__, test)


INVALID_SUBMITS = {
    "empty_command": (
        pb.SubmitJobRequest(command=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command cannot be empty",
    ),
    "blank_command": (
        pb.SubmitJobRequest(command=" \t\n "),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command cannot be empty",
    ),
    "command_of_1025_bytes": (
        pb.SubmitJobRequest(command="x" * 1025),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command exceeds maximum allowed length",
    ),
    "command_of_513_two_byte_characters": (
        pb.SubmitJobRequest(command="é" * 513),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command exceeds maximum allowed length",
    ),
    "image_starting_with_a_dash": (
        pb.SubmitJobRequest(command="true", image="-rm"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    "image_that_is_an_option": (
        pb.SubmitJobRequest(command="true", image="--privileged"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    "image_with_a_space": (
        pb.SubmitJobRequest(command="true", image="Bad Image"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    "image_of_256_characters": (
        pb.SubmitJobRequest(command="true", image="x" * 256),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    "image_not_allowed": (
        pb.SubmitJobRequest(command="true", image="ubuntu:22.04"),
        grpc.StatusCode.PERMISSION_DENIED,
        "Image not allowed",
    ),
    "timeout_over_the_maximum": (
        pb.SubmitJobRequest(command="true", timeout_seconds=601),
        grpc.StatusCode.INVALID_ARGUMENT,
        "timeout_seconds exceeds maximum of 600",
    ),
}

REST_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    grpc.StatusCode.PERMISSION_DENIED: "PERMISSION_DENIED",
}

MALFORMED_BODIES = {
    "not_json": (b"{not json", "request body is not valid JSON"),
    "a_list": (b"[1, 2]", "request body must be a JSON object"),
    "a_string": (b'"echo"', "request body must be a JSON object"),
    "no_command": (b"{}", "command is required and must be a string"),
    "command_not_a_string": (b'{"command": 5}', "command is required and must be a string"),
    "image_not_a_string": (b'{"command": "true", "image": 3}', "image must be a string"),
    "timeout_not_an_integer": (
        b'{"command": "true", "timeout_seconds": "x"}',
        "timeout_seconds must be a non-negative integer",
    ),
}


class SubmitValidationTests(SharedNodeTestCase):
    """SubmitJob and POST /api/jobs refuse what API.md refuses, and accept the limits."""

    async def check_grpc_submit_refused(self, case) -> None:
        """gRPC SubmitJob refuses the request with the documented code and message"""
        request, code, message = case
        before = await self.table()
        self.assertEqual(await self.call_error("SubmitJob", request), (code, message))
        await self.assertTableUnchanged(before)

    async def check_rest_submit_refused(self, case) -> None:
        """POST /api/jobs refuses the body with the documented status and message"""
        request, code, message = case
        body = {"command": request.command}
        if request.HasField("image"):
            body["image"] = request.image
        if request.timeout_seconds:
            body["timeout_seconds"] = request.timeout_seconds
        before = await self.table()
        answer = await self.node.rest("POST", "/api/jobs", body)
        expected_status = 403 if code == grpc.StatusCode.PERMISSION_DENIED else 400
        self.assertEqual(answer.status, expected_status)
        self.assertEqual(
            answer.body,
            {"success": False, "job_id": None, "error": message, "code": REST_CODES[code]},
        )
        await self.assertTableUnchanged(before)

    async def test_rest_submit_refuses_an_unknown_field_by_name(self):
        before = await self.table()
        answer = await self.node.rest(
            "POST", "/api/jobs", {"command": "echo hi", "timeout_secs": -1}
        )
        self.assertEqual(
            (answer.status, answer.body),
            (
                400,
                {
                    "success": False,
                    "job_id": None,
                    "error": "unknown field: timeout_secs",
                    "code": "INVALID_ARGUMENT",
                },
            ),
        )
        await self.assertTableUnchanged(before)

    async def test_max_attempts_out_of_range_is_refused_on_both_apis(self):
        before = await self.table()
        for value in (11, 2**32 - 1):
            self.assertEqual(
                await self.call_error(
                    "SubmitJob", pb.SubmitJobRequest(command="true", max_attempts=value)
                ),
                (grpc.StatusCode.INVALID_ARGUMENT, "max_attempts must be from 1 to 10"),
            )
            answer = await self.node.rest(
                "POST", "/api/jobs", {"command": "true", "max_attempts": value}
            )
            self.assertEqual(
                (answer.status, answer.body["error"]), (400, "max_attempts must be from 1 to 10")
            )
        await self.assertTableUnchanged(before)

    async def test_every_grpc_error_carries_its_code_as_metadata(self):
        cases = [
            ("GetJobStatus", pb.GetJobStatusRequest(job_id="zz"), "INVALID_ARGUMENT"),
            ("GetJobStatus", pb.GetJobStatusRequest(job_id=str(uuid.uuid4())), "NOT_FOUND"),
            ("CancelJob", pb.CancelJobRequest(job_id=str(uuid.uuid4())), "NOT_FOUND"),
            (
                "CancelJob",
                pb.CancelJobRequest(job_id=await self.finished_job()),
                "ALREADY_TERMINAL",
            ),
            ("SubmitJob", pb.SubmitJobRequest(command="   "), "INVALID_ARGUMENT"),
            (
                "SubmitJob",
                pb.SubmitJobRequest(command="true", image="evil/img"),
                "PERMISSION_DENIED",
            ),
            ("ListJobs", pb.ListJobsRequest(page_token="garbage"), "INVALID_ARGUMENT"),
        ]
        for method, request, code in cases:
            with self.assertRaises(CallFailed) as caught:
                await self.node.call(method, request, timeout=10)
            self.assertEqual(caught.exception.error_code, code, f"{method} {request}")

    async def check_malformed_body_refused(self, case) -> None:
        """POST /api/jobs refuses a malformed body with 400 and the documented message"""
        raw, error = case
        before = await self.table()
        answer = await self.node.rest("POST", "/api/jobs", raw=raw)
        self.assertEqual(answer.status, 400)
        self.assertEqual(
            answer.body,
            {"success": False, "job_id": None, "error": error, "code": "INVALID_ARGUMENT"},
        )
        await self.assertTableUnchanged(before)

    async def test_command_of_exactly_1024_bytes_is_accepted(self):
        command = "echo " + "a" * 1019
        self.assertEqual(len(command.encode()), 1024)
        job_id = await self.submit(command)
        status = await wait_finished(self.node, job_id)
        self.assertEqual(status.command, command)

    async def test_command_is_stored_untrimmed(self):
        job_id = await self.submit("  echo spaced  ")
        status = await wait_finished(self.node, job_id)
        self.assertEqual(status.command, "  echo spaced  ")

    async def test_rest_refuses_bodies_over_64_kib(self):
        before = await self.table()
        raw = b'{"command": "true", "pad": "' + b"x" * (64 * 1024) + b'"}'
        answer = await self.node.rest("POST", "/api/jobs", raw=raw)
        self.assertEqual(answer.status, 413)
        self.assertIs(answer.body["success"], False)
        await self.assertTableUnchanged(before)


add_cases(
    SubmitValidationTests,
    "test_grpc_submit_refuses",
    INVALID_SUBMITS,
    SubmitValidationTests.check_grpc_submit_refused,
)
add_cases(
    SubmitValidationTests,
    "test_rest_submit_refuses",
    INVALID_SUBMITS,
    SubmitValidationTests.check_rest_submit_refused,
)
add_cases(
    SubmitValidationTests,
    "test_rest_submit_refuses_malformed_body",
    MALFORMED_BODIES,
    SubmitValidationTests.check_malformed_body_refused,
)


class CancelErrorTests(SharedNodeTestCase):
    """CancelJob and DELETE /api/jobs/{id}: bad ids, unknown and finished jobs."""

    async def test_cancel_errors_over_grpc(self):
        finished = await self.finished_job()
        before = await self.table()
        self.assertEqual(
            await self.call_error("CancelJob", pb.CancelJobRequest(job_id="nope")),
            (grpc.StatusCode.INVALID_ARGUMENT, "invalid job_id"),
        )
        self.assertEqual(
            await self.call_error("CancelJob", pb.CancelJobRequest(job_id=str(uuid.uuid4()))),
            (grpc.StatusCode.NOT_FOUND, "job not found"),
        )
        self.assertEqual(
            await self.call_error("CancelJob", pb.CancelJobRequest(job_id=finished)),
            (grpc.StatusCode.FAILED_PRECONDITION, "job is already completed"),
        )
        await self.assertTableUnchanged(before)

    async def test_cancel_then_cancel_again(self):
        job_id = await self.submit("sleep 30")
        braced = "{" + job_id.replace("-", "").upper() + "}"
        reply = await self.node.call("CancelJob", pb.CancelJobRequest(job_id=braced))
        self.assertEqual((reply.success, reply.message), (True, f"job {job_id} cancelled"))
        self.assertEqual(
            await self.call_error("CancelJob", pb.CancelJobRequest(job_id=job_id)),
            (grpc.StatusCode.FAILED_PRECONDITION, "job is already cancelled"),
        )
        answer = await self.node.rest("DELETE", f"/api/jobs/{job_id}")
        self.assertEqual(
            (answer.status, answer.body),
            (
                400,
                {"success": False, "error": "job is already cancelled", "code": "ALREADY_TERMINAL"},
            ),
        )

    async def test_cancel_errors_over_rest(self):
        finished = await self.finished_job()
        before = await self.table()
        invalid = await self.node.rest("DELETE", "/api/jobs/nope")
        self.assertEqual(
            (invalid.status, invalid.body),
            (400, {"success": False, "error": "invalid job id", "code": "INVALID_ARGUMENT"}),
        )
        missing = await self.node.rest("DELETE", f"/api/jobs/{uuid.uuid4()}")
        self.assertEqual(
            (missing.status, missing.body),
            (404, {"success": False, "error": "job not found", "code": "NOT_FOUND"}),
        )
        done = await self.node.rest("DELETE", f"/api/jobs/{finished}")
        self.assertEqual(
            (done.status, done.body),
            (
                400,
                {"success": False, "error": "job is already completed", "code": "ALREADY_TERMINAL"},
            ),
        )
        await self.assertTableUnchanged(before)

    async def test_rest_cancel_succeeds(self):
        job_id = await self.submit("sleep 30")
        answer = await self.node.rest("DELETE", f"/api/jobs/{job_id}")
        self.assertEqual((answer.status, answer.body), (200, {"success": True, "error": None}))
        job = await self.node.rest("GET", f"/api/jobs/{job_id}")
        self.assertEqual(job.body["status"], "cancelled")


INVALID_UTF8_CALLS = {
    "submit": ("/scheduler.SchedulerService/SubmitJob", pb.SubmitJobRequest(command="echo ok")),
    "cancel": ("/scheduler.SchedulerService/CancelJob", pb.CancelJobRequest(job_id="ok")),
    "list": ("/scheduler.SchedulerService/ListJobs", pb.ListJobsRequest(command_filter="ok")),
}


class ReadErrorTests(SharedNodeTestCase):
    """Status, output and list errors, unknown routes and undecodable requests."""

    async def test_status_and_output_errors(self):
        self.assertEqual(
            await self.call_error("GetJobStatus", pb.GetJobStatusRequest(job_id="123")),
            (grpc.StatusCode.INVALID_ARGUMENT, "Invalid job ID"),
        )
        self.assertEqual(
            await self.call_error("GetJobStatus", pb.GetJobStatusRequest(job_id=str(uuid.uuid4()))),
            (grpc.StatusCode.NOT_FOUND, "Job not found"),
        )
        self.assertEqual(
            await self.call_error("GetJobOutput", pb.GetJobOutputRequest(job_id="zz")),
            (grpc.StatusCode.INVALID_ARGUMENT, "Invalid job ID"),
        )
        self.assertEqual(
            await self.call_error("GetJobOutput", pb.GetJobOutputRequest(job_id=str(uuid.uuid4()))),
            (grpc.StatusCode.NOT_FOUND, "Job not found"),
        )
        missing = await self.node.rest("GET", f"/api/jobs/{uuid.uuid4()}")
        self.assertEqual(
            (missing.status, missing.body), (404, {"error": "job not found", "code": "NOT_FOUND"})
        )

    async def test_list_errors_and_clamping(self):
        for _ in range(2):  # at least two jobs, so that a page of one has a next page
            await self.finished_job()
        self.assertEqual(
            await self.call_error("ListJobs", pb.ListJobsRequest(page_token="garbage")),
            (grpc.StatusCode.INVALID_ARGUMENT, "Invalid page token"),
        )
        first = await self.node.call("ListJobs", pb.ListJobsRequest(page_size=1))
        self.assertEqual(len(first.jobs), 1)
        self.assertTrue(first.next_page_token)
        other_filter = pb.ListJobsRequest(
            page_size=1, page_token=first.next_page_token, command_filter="zzz"
        )
        self.assertEqual(
            await self.call_error("ListJobs", other_filter),
            (grpc.StatusCode.INVALID_ARGUMENT, "Invalid page token"),
        )
        big = await self.node.call("ListJobs", pb.ListJobsRequest(page_size=5000))
        self.assertLess(big.total_count, 1000)  # so a clamped page still holds them all
        self.assertEqual(len(big.jobs), big.total_count)
        bad = await self.node.rest("GET", "/api/jobs?page_token=garbage&limit=2")
        self.assertEqual(
            (bad.status, bad.body),
            (400, {"error": "Invalid page token", "code": "INVALID_ARGUMENT"}),
        )

    async def test_an_unknown_status_filter_is_refused(self):
        self.assertEqual(
            await self.call_error("ListJobs", pb.ListJobsRequest(status_filter=99)),
            (grpc.StatusCode.INVALID_ARGUMENT, "unknown status_filter 99"),
        )

        def stream():
            return list(self.node.scheduler.StreamJobs(pb.StreamJobsRequest(status_filter=-1)))

        with self.assertRaises(grpc.RpcError) as caught:
            await deferToThread(stream)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.details(), "unknown status_filter -1")

    async def test_a_form_body_is_not_parsed_as_a_form(self):
        # A malformed multipart body once got a bare 400 from the HTTP layer; the node
        # reads every body as JSON (or nothing) and answers as JSON.
        for form in ("multipart/form-data; boundary=x", "application/x-www-form-urlencoded"):
            answer = await self.node.rest("POST", "/api/jobs", raw=b"[[]]", content_type=form)
            self.assertEqual(answer.status, 400)
            self.assertEqual(answer.body["code"], "INVALID_ARGUMENT")
            self.assertEqual(answer.body["error"], "request body must be a JSON object")

    async def test_unknown_routes_get_json_404(self):
        answer = await self.node.rest("GET", "/no/such/route")
        self.assertEqual(answer.status, 404)
        self.assertIsInstance(answer.body, dict)
        self.assertIn("error", answer.body)

    async def check_invalid_utf8_refused(self, case) -> None:
        """a string field that is not UTF-8 is refused as INVALID_ARGUMENT"""
        method, message = case
        before = await self.table()
        raw = message.SerializeToString().replace(b"ok", b"\xff\xfe")
        call = self.node.channel.unary_unary(
            method, request_serializer=None, response_deserializer=None
        )
        with self.assertRaises(CallFailed) as caught:
            await call_deferred(reactor, call, raw, 10)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(caught.exception.details.startswith("Malformed request"))
        await self.assertTableUnchanged(before)


add_cases(
    ReadErrorTests,
    "test_invalid_utf8_is_refused_as_invalid_argument_in",
    INVALID_UTF8_CALLS,
    ReadErrorTests.check_invalid_utf8_refused,
)
