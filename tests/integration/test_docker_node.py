"""A real node with the docker executor on the real engine: the user-visible path."""

import docker
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from tests import docker_engine
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import NodeFactory, wait_for


class DockerNodeTests(unittest.TestCase):
    """One node of its own per test, running jobs in containers of the test image."""

    timeout = 180

    async def setUp(self) -> None:
        engine = await deferToThread(docker_engine.prepared_env)
        self.node = NodeFactory.for_test(self).start(
            "--executor", "docker", "--image", engine.image
        )
        await self.node.until_ready()

    async def test_rest_and_grpc_jobs_run_in_containers(self):
        node = self.node
        answer = await node.rest("POST", "/api/jobs", {"command": "echo hello"})
        self.assertEqual(answer.status, 200)
        self.assertIs(answer.body["success"], True)
        job_id = answer.body["job_id"]
        status = await wait_finished(node, job_id)
        self.assertEqual(
            (status.status, status.output, status.exit_code),
            (pb.JOB_STATUS_COMPLETED, "hello\n", 0),
        )
        listed = {job["id"]: job for job in (await node.rest("GET", "/api/jobs")).body}
        self.assertEqual(listed[job_id]["status"], "completed")
        self.assertEqual(listed[job_id]["output"], "hello\n")
        self.assertEqual(listed[job_id]["exit_code"], 0)

        reply = await node.call("SubmitJob", pb.SubmitJobRequest(command="id -u; exit 4"))
        status = await wait_finished(node, reply.job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_FAILED)
        self.assertEqual(status.exit_code, 4)
        self.assertNotIn(status.output.strip(), ("", "0"))  # not root

    async def test_missing_image_fails_the_job_with_a_clear_error(self):
        reply = await self.node.call(
            "SubmitJob",
            pb.SubmitJobRequest(command="true", image="jobsched-test/no-such-image:1"),
        )
        status = await wait_finished(self.node, reply.job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_FAILED)
        self.assertIn("jobsched-test/no-such-image:1", status.error)
        self.assertFalse(status.HasField("exit_code"))

    async def test_cancelling_a_running_job_removes_its_container(self):
        reply = await self.node.call("SubmitJob", pb.SubmitJobRequest(command="sleep 60"))
        await wait_status(self.node, reply.job_id, pb.JOB_STATUS_RUNNING)
        name = "jobsched-" + reply.job_id.replace("-", "")
        client = docker.from_env()
        self.addCleanup(client.close)

        def containers():
            return deferToThread(docker_engine.containers_named, client, name)

        await wait_for(containers, 60, "the job's container to exist")
        await self.node.call("CancelJob", pb.CancelJobRequest(job_id=reply.job_id))

        async def container_gone():
            return not await containers()

        # long before the sleep could end by itself
        await wait_for(container_gone, 30, "the cancelled job's container to be gone")
        status = await wait_finished(self.node, reply.job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_CANCELLED)
