"""A single real node end to end: REST and gRPC submit, run, observe (process executor)."""

import grpc
import pytest

from jobsched._proto import scheduler_pb2 as pb
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import http

pytestmark = pytest.mark.slow


@pytest.fixture
def node(nodes):
    node = nodes.start("--executor", "process", "--max-job-timeout", "600")
    node.wait_ready()
    return node


def test_rest_submit_runs_and_every_view_shows_the_result(node):
    answer = http("POST", node.url + "/api/jobs", {"command": "echo hello"})
    assert answer.status == 200
    assert answer.body["success"] is True and answer.body["error"] is None
    assert answer.body["status"] == "pending"
    job_id = answer.body["job_id"]

    status = wait_finished(node, job_id)
    assert status.status == pb.JOB_STATUS_COMPLETED
    assert status.output == "hello\n"
    assert status.HasField("exit_code") and status.exit_code == 0
    assert status.executed_by == 1

    listed = [job for job in node.get("/api/jobs").body if job["id"] == job_id]
    assert len(listed) == 1
    assert listed[0]["status"] == "completed"
    assert listed[0]["output"] == "hello\n"
    assert listed[0]["exit_code"] == 0
    assert listed[0]["created_at"].endswith("+00:00")
    assert listed[0]["completed_at"].endswith("+00:00")

    one = node.get(f"/api/jobs/{job_id.upper()}")
    assert one.status == 200 and one.body["output"] == "hello\n"

    output = node.internal.GetJobOutput(pb.GetJobOutputRequest(job_id=job_id))
    assert output.found and output.output == "hello\n"


def test_grpc_submit_runs_and_reports_failure_with_stderr(node):
    reply = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="echo out; echo err >&2; exit 3"))
    assert reply.created_at_ms > 0
    status = wait_finished(node, reply.job_id)
    assert status.status == pb.JOB_STATUS_FAILED
    assert status.exit_code == 3
    assert status.output == "out\n"
    assert status.error == "err\n"
    assert status.command == "echo out; echo err >&2; exit 3"
    assert status.attempts == 1
    assert status.HasField("started_at_ms") and status.HasField("completed_at_ms")


def test_timeout_fails_the_job(node):
    reply = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 60", timeout_seconds=1))
    early = node.internal.GetJobOutput(pb.GetJobOutputRequest(job_id=reply.job_id))
    assert (early.job_id, early.found) == (reply.job_id, False)  # no output held yet
    status = wait_finished(node, reply.job_id, timeout=20)
    assert status.status == pb.JOB_STATUS_FAILED
    assert status.error == "Timed out after 1s"
    assert not status.HasField("exit_code")


def test_cancel_a_running_job(node):
    reply = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 60"))
    wait_status(node, reply.job_id, pb.JOB_STATUS_RUNNING)
    cancelled = node.scheduler.CancelJob(pb.CancelJobRequest(job_id=reply.job_id))
    assert cancelled.success and cancelled.message == f"job {reply.job_id} cancelled"
    status = wait_finished(node, reply.job_id)
    assert status.status == pb.JOB_STATUS_CANCELLED
    assert status.HasField("completed_at_ms")
    # the process is gone: nothing of ours still sleeps 60
    import subprocess

    def no_sleeper():
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        return "sleep 60" not in ps

    from tests.nodeproc import wait_until

    wait_until(no_sleeper, 5, "the cancelled process to be killed")


def test_idempotency_key_returns_the_same_job(node):
    first = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="true", idempotency_key="k-1"))
    again = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="true", idempotency_key="k-1"))
    other = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="true", idempotency_key="k-2"))
    assert first.job_id == again.job_id
    assert other.job_id != first.job_id


def test_list_filters_and_paging(node):
    ids = [
        node.scheduler.SubmitJob(pb.SubmitJobRequest(command=f"echo Item-{n}")).job_id
        for n in range(7)
    ]
    for job_id in ids:
        wait_finished(node, job_id)
    page = node.scheduler.ListJobs(pb.ListJobsRequest(page_size=3, command_filter="item-"))
    assert page.total_count == 7
    assert [job.job_id for job in page.jobs] == ids[:3]
    seen = [job.job_id for job in page.jobs]
    while page.next_page_token:
        page = node.scheduler.ListJobs(
            pb.ListJobsRequest(page_size=3, command_filter="item-", page_token=page.next_page_token)
        )
        seen += [job.job_id for job in page.jobs]
    assert seen == ids
    completed = node.scheduler.ListJobs(
        pb.ListJobsRequest(status_filter=pb.JOB_STATUS_COMPLETED, worker_id_filter=1)
    )
    assert {job.job_id for job in completed.jobs} >= set(ids)
    none = node.scheduler.ListJobs(pb.ListJobsRequest(worker_id_filter=99))
    assert none.total_count == 0 and not none.jobs
    streamed = [job.job_id for job in node.scheduler.StreamJobs(pb.StreamJobsRequest())]
    assert streamed == ids

    rest = http("GET", node.url + "/api/jobs?command=ITEM-&limit=5")
    assert [job["id"] for job in rest.body] == ids[:5]
    token = rest.headers["X-Next-Page-Token"]
    rest2 = http("GET", node.url + f"/api/jobs?command=ITEM-&limit=5&page_token={token}")
    assert [job["id"] for job in rest2.body] == ids[5:]


def test_cluster_status_and_log(node):
    status = node.scheduler.GetClusterStatus(pb.GetClusterStatusRequest())
    assert status.leader_id == 1 and status.current_term >= 1
    assert [(n.node_id, n.is_alive, n.role) for n in status.nodes] == [(1, True, "leader")]
    assert status.nodes[0].address == node.grpc_address

    node.scheduler.SubmitJob(pb.SubmitJobRequest(command="true"))
    log = node.scheduler.GetRaftLogEntries(pb.GetRaftLogEntriesRequest())
    assert log.first_available_index == 1
    assert log.entries[0].index == 1
    assert log.entries[0].command.WhichOneof("command_type") is None  # the leader's no-op
    kinds = [entry.command.WhichOneof("command_type") for entry in log.entries]
    assert "submit_job" in kinds
    assert all(entry.is_committed for entry in log.entries if entry.index <= log.commit_index)

    cluster = node.get("/api/cluster").body
    assert cluster["node_id"] == 1 and cluster["role"] == "leader" and cluster["leader_id"] == 1
    assert cluster["log_length"] >= cluster["commit_index"] >= 1
    assert cluster["nodes"][0]["is_alive"] is True
    assert node.get("/health/live").body == {"status": "ok"}
    assert node.get("/health/ready").body == {"status": "ok", "leader_id": 1}


def test_dashboard_placeholder_is_served_with_security_headers(node):
    page = node.get("/")
    assert page.status == 200
    assert "jobsched" in page.body
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_drain_refuses_new_jobs_and_a_lone_leader_cannot_hand_over(node):
    running = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 1; echo slept")).job_id
    wait_status(node, running, pb.JOB_STATUS_RUNNING)
    before = node.get("/api/jobs").body
    reply = node.scheduler.DrainNode(pb.DrainNodeRequest(), timeout=70)
    assert (reply.success, reply.message) == (False, "No peers available for transfer")
    assert wait_finished(node, running).output == "slept\n"  # it was let finish

    with pytest.raises(grpc.RpcError) as raised:
        node.scheduler.SubmitJob(pb.SubmitJobRequest(command="true"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "Node is draining and not accepting new jobs"
    answer = http("POST", node.url + "/api/jobs", {"command": "true"})
    assert answer.status == 503
    assert answer.body == {
        "success": False,
        "job_id": None,
        "error": "Node is draining and not accepting new jobs",
    }
    again = http("POST", node.url + "/api/nodes/self/drain")
    assert again.status == 409 and again.body["success"] is False
    assert [job["id"] for job in node.get("/api/jobs").body] == [job["id"] for job in before]
    cluster = node.scheduler.GetClusterStatus(pb.GetClusterStatusRequest())
    assert cluster.nodes[0].draining is True


def test_metrics_in_prometheus_text(node):
    job_id = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="true")).job_id
    wait_finished(node, job_id)
    answer = node.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = dict(line.rsplit(" ", 1) for line in answer.body.splitlines())
    assert samples["jobsched_raft_is_leader"] == "1"
    assert int(samples['jobsched_jobs{status="completed"}']) >= 1
    assert int(samples["jobsched_raft_commit_index"]) >= 3
