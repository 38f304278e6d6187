"""DockerExecutor against a real engine: the shared behaviour table, the sandbox,
timeouts, cancel, missing images and leftovers."""

from __future__ import annotations

import time
import uuid

import docker
import docker.errors
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.interfaces import IExecutor
from jobsched.jobs.model import JobStatus
from jobsched.worker.docker import CLUSTER_LABEL, JOB_LABEL, DockerExecutor, container_name
from jobsched.worker.results import LEASE_RAN_OUT
from tests import docker_engine
from tests.executor_cases import CASES, Case, check_result, new_spec
from tests.nodeproc import wait_for
from tests.unit.test_fence import RecordingFence


class LeaseOut(RecordingFence):
    """A fence whose lease ran out while its node was stopped starting a run."""

    def lease_expired(self):
        return True


SANDBOX_CASES = {
    "no-network": Case("ls /sys/class/net", JobStatus.COMPLETED, "lo\n", 0),
    "root-read-only": Case(
        "touch /forbidden",
        JobStatus.FAILED,
        "",
        1,
        error=None,
        error_contains="Read-only file system",
    ),
    "tmp-writable": Case("echo hi > /tmp/x && cat /tmp/x", JobStatus.COMPLETED, "hi\n", 0),
    "not-root": Case("id -u; id -g", JobStatus.COMPLETED, "65534\n65534\n", 0),
    "no-capabilities": Case(
        "grep CapEff /proc/self/status", JobStatus.COMPLETED, "CapEff:\t0000000000000000\n", 0
    ),
}


class DockerExecutorWithoutEngineTests(unittest.TestCase):
    """What needs no engine: the interface and how the client is built."""

    def test_provides_iexecutor(self):
        executor = DockerExecutor(reactor)
        self.assertTrue(verifyObject(IExecutor, executor))
        self.assertEqual(executor.name, "docker")

    async def test_connection_pool_is_sized_for_slots_plus_control_calls(self):
        asked = {}

        class FakeClient:
            def close(self) -> None:
                asked["closed"] = True

        def factory(**options) -> FakeClient:
            asked.update(options)
            return FakeClient()

        executor = DockerExecutor(reactor, slots=7, docker_client_factory=factory)
        await executor.start()
        await executor.stop()
        self.assertEqual(asked, {"max_pool_size": 11, "closed": True})


class DockerExecutorTests(unittest.TestCase):
    """Executors on the test image, under a cluster label of the test's own (so tests
    never sweep each other's containers); every executor is stopped in cleanup."""

    timeout = 180

    async def setUp(self) -> None:
        self.engine = await deferToThread(docker_engine.prepared_env)
        self.docker = docker.from_env()
        self.addCleanup(self.docker.close)
        self.cluster_label = f"jobsched-test-{uuid.uuid4().hex[:12]}"

    async def start_executor(self, **options) -> DockerExecutor:
        options.setdefault("image", self.engine.image)
        executor = DockerExecutor(reactor, cluster_label=self.cluster_label, **options)
        self.addCleanup(executor.stop)
        await executor.start()
        return executor

    def containers_named(self, name: str) -> defer.Deferred:
        return deferToThread(docker_engine.containers_named, self.docker, name)

    async def wait_until_running(self, name: str) -> None:
        async def running():
            found = await self.containers_named(name)
            return found and found[0].status == "running"

        await wait_for(running, 60, f"container {name} to run")

    async def wait_until_gone(self, name: str, timeout: float) -> None:
        async def gone():
            return not await self.containers_named(name)

        await wait_for(gone, timeout, f"container {name} to be removed")

    async def check_behaviour(self, case: Case) -> None:
        executor = await self.start_executor(max_output_bytes=case.max_output_bytes)
        check_result(self, await executor.run(new_spec(case.command)), case)

    async def test_default_image_is_used_when_the_spec_has_none(self):
        executor = await self.start_executor(image=self.engine.image)
        result = await executor.run(new_spec("echo hi", image=""))
        self.assertEqual((result.status, result.output), (JobStatus.COMPLETED, "hi\n"))

    async def test_container_is_hardened_and_labelled(self):
        executor = await self.start_executor()
        spec = new_spec("sleep 60")
        running = executor.run(spec)
        name = container_name(spec.job_id)
        await self.wait_until_running(name)
        container = await deferToThread(self.docker.containers.get, name)
        host = container.attrs["HostConfig"]
        self.assertEqual(container.attrs["Config"]["Cmd"], ["sh", "-c", "sleep 60"])
        self.assertEqual(container.attrs["Config"]["User"], "65534:65534")
        self.assertEqual(container.labels[CLUSTER_LABEL], self.cluster_label)
        self.assertEqual(container.labels[JOB_LABEL], spec.job_id)
        self.assertEqual(host["NetworkMode"], "none")
        self.assertEqual(host["CapDrop"], ["ALL"])
        self.assertIs(host["ReadonlyRootfs"], True)
        self.assertEqual(host["SecurityOpt"], ["no-new-privileges"])
        self.assertEqual(host["Memory"], 256 * 1024 * 1024)
        self.assertEqual(host["NanoCpus"], 500_000_000)
        self.assertEqual(host["PidsLimit"], 128)
        self.assertEqual(host["Tmpfs"], {"/tmp": "rw,size=16m,mode=1777"})
        await executor.cancel(spec.job_id)
        await running

    async def test_each_run_is_under_the_fence_until_its_result_is_delivered(self):
        events = []
        executor = await self.start_executor(fence=RecordingFence(events))
        spec = new_spec("echo hi")
        run = executor.run(spec)
        [(started, token, kind, target, label)] = events  # before the container exists
        self.assertEqual(
            (started, kind, target, label),
            ("started", "container", container_name(spec.job_id), spec.job_id),
        )
        run.addCallback(lambda result: events.append(("delivered", result.output)))
        await run
        self.assertEqual(events[1:], [("ended", token), ("delivered", "hi\n")])

    async def test_a_run_started_after_the_lease_ran_out_creates_no_container(self):
        events = []
        executor = await self.start_executor(fence=LeaseOut(events))
        spec = new_spec("echo hi")
        result = await executor.run(spec)
        self.assertEqual((result.status, result.error), (JobStatus.FAILED, LEASE_RAN_OUT))
        self.assertEqual([event[0] for event in events], ["started", "ended"])
        self.assertEqual(await self.containers_named(container_name(spec.job_id)), [])

    async def test_timeout_kills_and_removes_the_container(self):
        executor = await self.start_executor()
        spec = new_spec("echo started; sleep 60", timeout_seconds=2)
        started = time.monotonic()
        result = await executor.run(spec)
        # not before the timeout, and long before the sleep could end by itself
        self.assertGreaterEqual(time.monotonic() - started, 2)
        self.assertLess(time.monotonic() - started, 40)
        self.assertEqual(result.status, JobStatus.FAILED)
        self.assertIsNone(result.exit_code)
        self.assertEqual(result.error, "Timed out after 2s")
        self.assertIs(result.timed_out, True)
        self.assertEqual(result.output, "started\n")
        # removed while the result goes on, not before it
        await self.wait_until_gone(container_name(spec.job_id), 30)

    async def test_cancel_removes_the_container_even_with_every_slot_busy(self):
        executor = await self.start_executor(slots=1)
        spec = new_spec("sleep 60")
        running = executor.run(spec)
        name = container_name(spec.job_id)
        await self.wait_until_running(name)
        await executor.cancel(spec.job_id)
        # long before the sleep could end by itself
        await self.wait_until_gone(name, timeout=30)
        result = await running
        self.assertEqual(
            (result.status, result.exit_code, result.error), (JobStatus.FAILED, None, "Cancelled")
        )
        self.assertIs(result.timed_out, False)

    async def test_missing_image_fails_the_job_clearly(self):
        executor = await self.start_executor()
        spec = new_spec("echo hi", image="jobsched-test/nope:latest")
        result = await executor.run(spec)
        self.assertEqual(result.status, JobStatus.FAILED)
        self.assertIsNone(result.exit_code)
        self.assertIsNone(result.started_at_ms)
        self.assertTrue(
            result.error.startswith("Image not found: jobsched-test/nope:latest"), result.error
        )
        self.assertEqual(await self.containers_named(container_name(spec.job_id)), [])

    async def test_more_jobs_than_slots_all_complete(self):
        executor = await self.start_executor(slots=2)
        runs = [executor.run(new_spec(f"echo {n}")) for n in range(4)]
        results = [await run for run in runs]
        self.assertEqual([r.output for r in results], ["0\n", "1\n", "2\n", "3\n"])

    async def test_stop_kills_running_containers(self):
        executor = await self.start_executor()
        spec = new_spec("sleep 60")
        running = executor.run(spec)
        name = container_name(spec.job_id)
        await self.wait_until_running(name)
        await executor.stop()
        result = await running
        self.assertEqual(
            (result.status, result.exit_code, result.error),
            (JobStatus.FAILED, None, "Executor stopped"),
        )
        self.assertEqual(await self.containers_named(name), [])

    async def test_remove_leftovers_removes_only_this_clusters_containers(self):
        leftover_job, other_job = str(uuid.uuid4()), str(uuid.uuid4())

        def create(job_id: str, label: str):
            return self.docker.containers.run(
                self.engine.image,
                ["sleep", "60"],
                name=container_name(job_id),
                detach=True,
                labels={CLUSTER_LABEL: label, JOB_LABEL: job_id},
            )

        leftover = await deferToThread(create, leftover_job, self.cluster_label)
        self.addCleanup(self.remove_if_present, leftover)
        other = await deferToThread(create, other_job, self.cluster_label + "-other")
        self.addCleanup(self.remove_if_present, other)
        executor = await self.start_executor()
        self.assertEqual(await executor.remove_leftovers(), [leftover_job])
        self.assertEqual(await self.containers_named(container_name(leftover_job)), [])
        self.assertNotEqual(await self.containers_named(container_name(other_job)), [])
        self.assertEqual(await executor.remove_leftovers(), [])

    def remove_if_present(self, container) -> defer.Deferred:
        def remove():
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

        return deferToThread(remove)


def add_behaviour_cases(cases: dict) -> None:
    """One DockerExecutorTests method per behaviour-table case."""
    for case_id, case in cases.items():

        async def test(self, case=case):
            await self.check_behaviour(case)

        test.__name__ = "test_behaviour_" + case_id.replace("-", "_")
        test.__doc__ = f"`{case.command}` gives the result the table promises ({case_id})"
        setattr(DockerExecutorTests, test.__name__, test)


add_behaviour_cases(CASES)
add_behaviour_cases(SANDBOX_CASES)
