"""Every error row of API.md 2.1-2.6 and 3.3-3.4 a single node can produce, over gRPC
and REST: exact code or status, exact message, and the job table unchanged afterwards."""

import uuid

import grpc
import pytest

from jobsched._proto import scheduler_pb2 as pb
from tests.integration.jobwait import wait_finished
from tests.nodeproc import http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from tests.nodeproc import NodeFactory

    factory = NodeFactory(tmp_path_factory.mktemp("errors"))
    try:
        node = factory.start(
            "--executor",
            "process",
            "--max-job-timeout",
            "600",
            "--allowed-images",
            "alpine:*,jobsched-test/*",
            "--image",
            "alpine:latest",
        )
        node.wait_ready()
        yield node
    finally:
        factory.kill_all()


@pytest.fixture(scope="module")
def finished_job(node):
    job_id = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="echo done")).job_id
    wait_finished(node, job_id)
    return job_id


def table(node):
    """The whole job table as the REST API shows it."""
    return node.get("/api/jobs").body


def grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=10)
    return raised.value.code(), raised.value.details()


INVALID_SUBMITS = [
    (pb.SubmitJobRequest(command=""), grpc.StatusCode.INVALID_ARGUMENT, "Command cannot be empty"),
    (
        pb.SubmitJobRequest(command=" \t\n "),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command cannot be empty",
    ),
    (
        pb.SubmitJobRequest(command="x" * 1025),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command exceeds maximum allowed length",
    ),
    (
        pb.SubmitJobRequest(command="é" * 513),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Command exceeds maximum allowed length",
    ),
    (
        pb.SubmitJobRequest(command="true", image="-rm"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    (
        pb.SubmitJobRequest(command="true", image="--privileged"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    (
        pb.SubmitJobRequest(command="true", image="Bad Image"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    (
        pb.SubmitJobRequest(command="true", image="x" * 256),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid image reference",
    ),
    (
        pb.SubmitJobRequest(command="true", image="ubuntu:22.04"),
        grpc.StatusCode.PERMISSION_DENIED,
        "Image not allowed",
    ),
    (
        pb.SubmitJobRequest(command="true", timeout_seconds=601),
        grpc.StatusCode.INVALID_ARGUMENT,
        "timeout_seconds exceeds maximum of 600",
    ),
]


@pytest.mark.parametrize("request_, code, message", INVALID_SUBMITS)
def test_grpc_submit_refuses_invalid_input(node, request_, code, message):
    before = table(node)
    assert grpc_error(node.scheduler.SubmitJob, request_) == (code, message)
    assert table(node) == before


@pytest.mark.parametrize("request_, code, message", INVALID_SUBMITS)
def test_rest_submit_refuses_invalid_input(node, request_, code, message):
    body = {"command": request_.command}
    if request_.HasField("image"):
        body["image"] = request_.image
    if request_.timeout_seconds:
        body["timeout_seconds"] = request_.timeout_seconds
    before = table(node)
    answer = http("POST", node.url + "/api/jobs", body)
    expected_status = 403 if code == grpc.StatusCode.PERMISSION_DENIED else 400
    assert answer.status == expected_status
    assert answer.body == {"success": False, "job_id": None, "error": message}
    assert table(node) == before


def test_command_of_exactly_1024_bytes_is_accepted(node):
    command = "echo " + "a" * 1019
    assert len(command.encode()) == 1024
    reply = node.scheduler.SubmitJob(pb.SubmitJobRequest(command=command))
    status = node.scheduler.GetJobStatus(pb.GetJobStatusRequest(job_id=reply.job_id))
    assert status.command == command


def test_command_is_stored_untrimmed(node):
    reply = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="  echo spaced  "))
    status = wait_finished(node, reply.job_id)
    assert status.command == "  echo spaced  "


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"echo"', "request body must be a JSON object"),
        (b"{}", "command is required and must be a string"),
        (b'{"command": 5}', "command is required and must be a string"),
        (b'{"command": "true", "image": 3}', "image must be a string"),
        (
            b'{"command": "true", "timeout_seconds": "x"}',
            "timeout_seconds must be a non-negative integer",
        ),
    ],
)
def test_rest_submit_refuses_malformed_bodies(node, raw, error):
    before = table(node)
    answer = http("POST", node.url + "/api/jobs", raw=raw)
    assert answer.status == 400
    assert answer.body == {"success": False, "job_id": None, "error": error}
    assert table(node) == before


def test_rest_refuses_bodies_over_64_kib(node):
    before = table(node)
    raw = b'{"command": "true", "pad": "' + b"x" * (64 * 1024) + b'"}'
    answer = http("POST", node.url + "/api/jobs", raw=raw)
    assert answer.status == 413
    assert answer.body["success"] is False
    assert table(node) == before


def test_cancel_errors_over_grpc(node, finished_job):
    before = table(node)
    cancel = node.scheduler.CancelJob
    assert grpc_error(cancel, pb.CancelJobRequest(job_id="nope")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid job_id",
    )
    assert grpc_error(cancel, pb.CancelJobRequest(job_id=str(uuid.uuid4()))) == (
        grpc.StatusCode.NOT_FOUND,
        "job not found",
    )
    assert grpc_error(cancel, pb.CancelJobRequest(job_id=finished_job)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "job is already completed",
    )
    assert table(node) == before


def test_cancel_then_cancel_again(node):
    job_id = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 30")).job_id
    braced = "{" + job_id.replace("-", "").upper() + "}"
    reply = node.scheduler.CancelJob(pb.CancelJobRequest(job_id=braced))
    assert reply.success and reply.message == f"job {job_id} cancelled"
    assert grpc_error(node.scheduler.CancelJob, pb.CancelJobRequest(job_id=job_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "job is already cancelled",
    )
    answer = http("DELETE", node.url + f"/api/jobs/{job_id}")
    assert answer.status == 400
    assert answer.body == {"success": False, "error": "job is already cancelled"}


def test_cancel_errors_over_rest(node, finished_job):
    before = table(node)
    assert http("DELETE", node.url + "/api/jobs/nope").body == {
        "success": False,
        "error": "invalid job id",
    }
    assert http("DELETE", node.url + "/api/jobs/nope").status == 400
    missing = http("DELETE", node.url + f"/api/jobs/{uuid.uuid4()}")
    assert (missing.status, missing.body) == (404, {"success": False, "error": "job not found"})
    done = http("DELETE", node.url + f"/api/jobs/{finished_job}")
    assert (done.status, done.body) == (
        400,
        {"success": False, "error": "job is already completed"},
    )
    assert table(node) == before


def test_rest_cancel_succeeds(node):
    job_id = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 30")).job_id
    answer = http("DELETE", node.url + f"/api/jobs/{job_id}")
    assert (answer.status, answer.body) == (200, {"success": True, "error": None})
    assert node.get(f"/api/jobs/{job_id}").body["status"] == "cancelled"


def test_status_and_output_errors(node):
    status = node.scheduler.GetJobStatus
    assert grpc_error(status, pb.GetJobStatusRequest(job_id="123")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid job ID",
    )
    assert grpc_error(status, pb.GetJobStatusRequest(job_id=str(uuid.uuid4()))) == (
        grpc.StatusCode.NOT_FOUND,
        "Job not found",
    )
    output = node.internal.GetJobOutput
    assert grpc_error(output, pb.GetJobOutputRequest(job_id="zz")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid job ID",
    )
    assert grpc_error(output, pb.GetJobOutputRequest(job_id=str(uuid.uuid4()))) == (
        grpc.StatusCode.NOT_FOUND,
        "Job not found",
    )
    missing = node.get(f"/api/jobs/{uuid.uuid4()}")
    assert (missing.status, missing.body) == (404, {"error": "job not found"})


def test_list_errors_and_clamping(node, finished_job):
    assert grpc_error(node.scheduler.ListJobs, pb.ListJobsRequest(page_token="garbage")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid page token",
    )
    first = node.scheduler.ListJobs(pb.ListJobsRequest(page_size=1))
    assert len(first.jobs) == 1 and first.next_page_token
    other_filter = pb.ListJobsRequest(
        page_size=1, page_token=first.next_page_token, command_filter="zzz"
    )
    assert grpc_error(node.scheduler.ListJobs, other_filter) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid page token",
    )
    big = node.scheduler.ListJobs(pb.ListJobsRequest(page_size=5000))
    assert len(big.jobs) == big.total_count  # fewer than 1000 jobs: one page
    bad = http("GET", node.url + "/api/jobs?page_token=garbage&limit=2")
    assert (bad.status, bad.body) == (400, {"error": "Invalid page token"})


def test_unknown_routes_get_json_404(node):
    answer = node.get("/no/such/route")
    assert answer.status == 404
    assert isinstance(answer.body, dict) and "error" in answer.body


@pytest.mark.parametrize(
    "method, message",
    [
        ("/scheduler.SchedulerService/SubmitJob", pb.SubmitJobRequest(command="echo ok")),
        ("/scheduler.SchedulerService/CancelJob", pb.CancelJobRequest(job_id="ok")),
        ("/scheduler.SchedulerService/ListJobs", pb.ListJobsRequest(command_filter="ok")),
    ],
)
def test_invalid_utf8_is_refused_as_invalid_argument(node, method, message):
    before = table(node)
    raw = message.SerializeToString().replace(b"ok", b"\xff\xfe")
    call = node.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as raised:
        call(raw, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("Malformed request")
    assert table(node) == before
