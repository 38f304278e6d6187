"""A real node with the docker executor on the real engine: the user-visible path."""

import docker
import pytest

from jobsched._proto import scheduler_pb2 as pb
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import http, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture
def docker_node(nodes, docker_engine):
    node = nodes.start("--executor", "docker", "--image", docker_engine.image)
    node.wait_ready()
    return node


def test_rest_and_grpc_jobs_run_in_containers(docker_node):
    answer = http("POST", docker_node.url + "/api/jobs", {"command": "echo hello"})
    assert answer.status == 200 and answer.body["success"] is True
    job_id = answer.body["job_id"]
    status = wait_finished(docker_node, job_id)
    assert (status.status, status.output, status.exit_code) == (
        pb.JOB_STATUS_COMPLETED,
        "hello\n",
        0,
    )
    listed = {job["id"]: job for job in docker_node.get("/api/jobs").body}
    assert listed[job_id]["status"] == "completed"
    assert listed[job_id]["output"] == "hello\n"
    assert listed[job_id]["exit_code"] == 0

    reply = docker_node.scheduler.SubmitJob(pb.SubmitJobRequest(command="id -u; exit 4"))
    status = wait_finished(docker_node, reply.job_id)
    assert status.status == pb.JOB_STATUS_FAILED
    assert status.exit_code == 4
    assert status.output.strip() not in ("", "0")


def test_missing_image_fails_the_job_with_a_clear_error(docker_node):
    reply = docker_node.scheduler.SubmitJob(
        pb.SubmitJobRequest(command="true", image="jobsched-test/no-such-image:1")
    )
    status = wait_finished(docker_node, reply.job_id, timeout=60)
    assert status.status == pb.JOB_STATUS_FAILED
    assert "jobsched-test/no-such-image:1" in status.error
    assert not status.HasField("exit_code")


def test_cancelling_a_running_job_removes_its_container(docker_node):
    reply = docker_node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 60"))
    wait_status(docker_node, reply.job_id, pb.JOB_STATUS_RUNNING)
    name = "jobsched-" + reply.job_id.replace("-", "")
    client = docker.from_env()
    try:
        wait_until(
            lambda: client.containers.list(all=True, filters={"name": name}),
            30,
            "the job's container to exist",
        )
        docker_node.scheduler.CancelJob(pb.CancelJobRequest(job_id=reply.job_id))
        wait_until(
            lambda: not client.containers.list(all=True, filters={"name": name}),
            2,
            "the cancelled job's container to be gone",
        )
    finally:
        client.close()
    assert wait_finished(docker_node, reply.job_id).status == pb.JOB_STATUS_CANCELLED
