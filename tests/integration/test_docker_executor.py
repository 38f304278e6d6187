"""DockerExecutor against a real engine: the shared behaviour table, the sandbox,
timeouts, cancel, missing images and leftovers."""

from __future__ import annotations

import time
import uuid

import docker
import docker.errors
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from zope.interface.verify import verifyObject

from jobsched.interfaces import IExecutor
from jobsched.jobs.model import JobStatus
from jobsched.worker.docker import CLUSTER_LABEL, JOB_LABEL, DockerExecutor, container_name
from tests.executor_cases import CASES, Case, check_result, new_spec

pytestmark = pytest.mark.docker

SANDBOX_CASES = [
    pytest.param(Case("ls /sys/class/net", JobStatus.COMPLETED, "lo\n", 0), id="no-network"),
    pytest.param(
        Case(
            "touch /forbidden",
            JobStatus.FAILED,
            "",
            1,
            error=None,
            error_contains="Read-only file system",
        ),
        id="root-read-only",
    ),
    pytest.param(
        Case("echo hi > /tmp/x && cat /tmp/x", JobStatus.COMPLETED, "hi\n", 0), id="tmp-writable"
    ),
    pytest.param(Case("id -u; id -g", JobStatus.COMPLETED, "65534\n65534\n", 0), id="not-root"),
    pytest.param(
        Case(
            "grep CapEff /proc/self/status", JobStatus.COMPLETED, "CapEff:\t0000000000000000\n", 0
        ),
        id="no-capabilities",
    ),
]


@pytest.fixture(scope="module")
def docker_client(docker_engine):
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def cluster_label() -> str:
    """A label value of this test's own, so tests never sweep each other's containers."""
    return f"jobsched-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def executors(docker_engine, cluster_label):
    """Makes started DockerExecutors on the test image; stops them all at teardown."""
    made = []

    async def make(**options) -> DockerExecutor:
        options.setdefault("image", docker_engine.image)
        executor = DockerExecutor(reactor, cluster_label=cluster_label, **options)
        made.append(executor)
        await executor.start()
        return executor

    yield make
    for executor in made:
        pytest_twisted.blockon(executor.stop())


async def containers_named(client: docker.DockerClient, name: str) -> list:
    return await deferToThread(client.containers.list, all=True, filters={"name": f"^/{name}$"})


async def wait_until_running(client: docker.DockerClient, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = await containers_named(client, name)
        if found and found[0].status == "running":
            return
        assert time.monotonic() < deadline, f"{name} not running after {timeout}s"
        await deferLater(reactor, 0.05, lambda: None)


async def wait_until_gone(client: docker.DockerClient, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await containers_named(client, name):
        assert time.monotonic() < deadline, f"{name} still exists after {timeout}s"
        await deferLater(reactor, 0.05, lambda: None)


def test_provides_iexecutor():
    executor = DockerExecutor(reactor)
    assert verifyObject(IExecutor, executor)
    assert executor.name == "docker"


@pytest_twisted.ensureDeferred
async def test_connection_pool_is_sized_for_slots_plus_control_calls():
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
    assert asked == {"max_pool_size": 11, "closed": True}


@pytest.mark.parametrize("case", [pytest.param(c, id=i) for i, c in CASES.items()] + SANDBOX_CASES)
@pytest_twisted.ensureDeferred
async def test_behaviour_table(executors, case: Case):
    executor = await executors(max_output_bytes=case.max_output_bytes)
    check_result(await executor.run(new_spec(case.command)), case)


@pytest_twisted.ensureDeferred
async def test_default_image_is_used_when_the_spec_has_none(executors, docker_engine):
    executor = await executors(image=docker_engine.image)
    result = await executor.run(new_spec("echo hi", image=""))
    assert (result.status, result.output) == (JobStatus.COMPLETED, "hi\n")


@pytest_twisted.ensureDeferred
async def test_container_is_hardened_and_labelled(executors, docker_client, cluster_label):
    executor = await executors()
    spec = new_spec("sleep 60")
    running = executor.run(spec)
    name = container_name(spec.job_id)
    await wait_until_running(docker_client, name)
    container = (await containers_named(docker_client, name))[0]
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["Cmd"] == ["sh", "-c", "sleep 60"]
    assert container.attrs["Config"]["User"] == "65534:65534"
    assert container.labels[CLUSTER_LABEL] == cluster_label
    assert container.labels[JOB_LABEL] == spec.job_id
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"] is True
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 128
    assert host["Tmpfs"] == {"/tmp": "rw,size=16m,mode=1777"}
    await executor.cancel(spec.job_id)
    await running


@pytest_twisted.ensureDeferred
async def test_timeout_kills_and_removes_the_container(executors, docker_client):
    executor = await executors()
    spec = new_spec("echo started; sleep 60", timeout_seconds=2)
    started = time.monotonic()
    result = await executor.run(spec)
    assert 2 <= time.monotonic() - started < 6
    assert result.status == JobStatus.FAILED
    assert result.exit_code is None
    assert result.error == "Timed out after 2s"
    assert result.output == "started\n"
    assert await containers_named(docker_client, container_name(spec.job_id)) == []


@pytest_twisted.ensureDeferred
async def test_cancel_removes_the_container_within_2s_even_with_every_slot_busy(
    executors, docker_client
):
    executor = await executors(slots=1)
    spec = new_spec("sleep 60")
    running = executor.run(spec)
    name = container_name(spec.job_id)
    await wait_until_running(docker_client, name)
    cancelled_at = time.monotonic()
    await executor.cancel(spec.job_id)
    await wait_until_gone(docker_client, name, timeout=2.0)
    result = await running
    assert time.monotonic() - cancelled_at < 2
    assert (result.status, result.exit_code, result.error) == (JobStatus.FAILED, None, "Cancelled")


@pytest_twisted.ensureDeferred
async def test_missing_image_fails_the_job_clearly(executors, docker_client):
    executor = await executors()
    spec = new_spec("echo hi", image="jobsched-test/nope:latest")
    result = await executor.run(spec)
    assert result.status == JobStatus.FAILED
    assert result.exit_code is None
    assert result.started_at_ms is None
    assert result.error.startswith("Image not found: jobsched-test/nope:latest"), result.error
    assert await containers_named(docker_client, container_name(spec.job_id)) == []


@pytest_twisted.ensureDeferred
async def test_more_jobs_than_slots_all_complete(executors):
    executor = await executors(slots=2)
    results = [await d for d in [executor.run(new_spec(f"echo {n}")) for n in range(4)]]
    assert [r.output for r in results] == ["0\n", "1\n", "2\n", "3\n"]


@pytest_twisted.ensureDeferred
async def test_stop_kills_running_containers(executors, docker_client):
    executor = await executors()
    spec = new_spec("sleep 60")
    running = executor.run(spec)
    name = container_name(spec.job_id)
    await wait_until_running(docker_client, name)
    await executor.stop()
    result = await running
    assert (result.status, result.exit_code, result.error) == (
        JobStatus.FAILED,
        None,
        "Executor stopped",
    )
    assert await containers_named(docker_client, name) == []


@pytest_twisted.ensureDeferred
async def test_remove_leftovers_removes_only_this_clusters_containers(
    executors, docker_client, docker_engine, cluster_label
):
    leftover_job, other_job = str(uuid.uuid4()), str(uuid.uuid4())

    def create(job_id: str, label: str):
        return docker_client.containers.run(
            docker_engine.image,
            ["sleep", "60"],
            name=container_name(job_id),
            detach=True,
            labels={CLUSTER_LABEL: label, JOB_LABEL: job_id},
        )

    await deferToThread(create, leftover_job, cluster_label)
    other = await deferToThread(create, other_job, cluster_label + "-other")
    try:
        executor = await executors()
        assert await executor.remove_leftovers() == [leftover_job]
        assert await containers_named(docker_client, container_name(leftover_job)) == []
        assert await containers_named(docker_client, container_name(other_job)) != []
        assert await executor.remove_leftovers() == []
    finally:
        await deferToThread(other.remove, force=True)
