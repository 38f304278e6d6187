"""DockerExecutor: runs each job attempt in a locked-down container (BEHAVIOUR.md §5).

Every docker SDK call runs in a dedicated thread pool, never on the reactor thread.
The pool has `slots` threads for running jobs (a DeferredSemaphore keeps runs to
that many) plus a few for control calls, so a cancel or a stop is never stuck behind
jobs that hold every slot. Bookkeeping (which attempts run, timers, why one was
interrupted) stays on the reactor thread; a pool thread only sees an attempt's
`threading.Event`.

Output is read from the container's attach stream while it runs, capped as it
arrives and drained past the cap, and each frame is handed to the reactor for the
attempt's live output (followers see it as it comes); containers have no log driver, so a chatty job
fills neither the engine's disk nor this process's memory. A timeout, a cancel and
a stop all work the same way: a reactor-side kill by container name, after which
the stream ends and the run reports why the job was interrupted. A run makes four
engine calls (create, attach, start, wait; the image is looked up once per image);
the exited container is removed while its result goes on, not before. Each
container's name is registered with the fence before the container is created, so
the fence keeper kills it if this node dies or loses its lease.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from jobsched.interfaces import IExecutor, IFence
from jobsched.jobs.model import JobResult, JobSpec, JobStatus
from jobsched.worker.fence import Unfenced
from jobsched.worker.fence_keeper import CONTAINER
from jobsched.worker.live_output import STDERR, STDOUT, LiveOutput, LiveOutputs
from jobsched.worker.results import (
    CANCELLED,
    LEASE_RAN_OUT,
    STOPPED,
    CappedBuffer,
    exited,
    killed,
    now_ms,
    timed_out_message,
)

CLUSTER_LABEL = "jobsched.cluster"
JOB_LABEL = "jobsched.job-id"
CONTROL_THREADS = 2
EXTRA_CONNECTIONS = 4


def container_name(job_id: str) -> str:
    """`jobsched-<uuid hex>`: job ids are UUIDs (API.md), so one name per job."""
    return f"jobsched-{uuid.UUID(job_id).hex}"


@dataclasses.dataclass
class _Attempt:
    """A job attempt this executor holds, from run() until its result is delivered."""

    spec: JobSpec
    name: str
    interrupted: threading.Event = dataclasses.field(default_factory=threading.Event)
    reason: str = ""
    timed_out: bool = False
    timer: IDelayedCall | None = None
    fence_token: int = 0
    live: LiveOutput | None = None

    def interrupt(self, reason: str, timed_out: bool = False) -> None:
        if not self.reason:
            self.reason = reason
            self.timed_out = timed_out
        self.interrupted.set()


ENGINE_CHECK_SECONDS = 5


class EngineUnreachable(Exception):
    """The Docker engine does not answer; str() is one line for an operator."""


def require_engine(client_factory: Callable[..., docker.DockerClient] = docker.from_env) -> None:
    """Ping the engine once (blocking, at start-up before the reactor serves)."""
    try:
        client = client_factory(timeout=ENGINE_CHECK_SECONDS)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:  # any failure to reach the engine means the same here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EngineUnreachable(
            f"cannot reach the Docker engine ({reason}); "
            "start one, or use --executor process for development"
        ) from None


@implementer(IExecutor)
class DockerExecutor:
    """Runs `sh -c <command>` in a container: no network, no capabilities, read-only
    root, tmpfs /tmp, no-new-privileges, resource limits, a non-root user.

    `cluster_label` is the value of the `jobsched.cluster` label on every container;
    remove_leftovers() sweeps containers carrying it, so nodes sharing one engine
    need distinct values (e.g. cluster name plus node id).
    """

    name = "docker"
    log = Logger()

    def __init__(
        self,
        reactor: IReactorThreads,  # also IReactorTime, for job timeouts
        *,
        image: str = "alpine:latest",
        max_output_bytes: int = 65536,
        slots: int = 4,
        user: str = "65534:65534",
        memory: str = "256m",
        cpus: float = 0.5,
        pids_limit: int = 128,
        tmpfs_size: str = "16m",
        cluster_label: str = "jobsched",
        docker_client_factory: Callable[..., docker.DockerClient] = docker.from_env,
        fence: IFence | None = None,
        live_output: LiveOutputs | None = None,
    ) -> None:
        self._reactor = reactor
        self._fence = fence if fence is not None else Unfenced()
        self._live = (
            live_output if live_output is not None else LiveOutputs(reactor, max_output_bytes)
        )
        self._image = image
        self._max_output_bytes = max_output_bytes
        self._slots = slots
        self._user = user
        self._memory = memory
        self._nano_cpus = int(cpus * 1e9)
        self._pids_limit = pids_limit
        self._tmpfs_size = tmpfs_size
        self._cluster_label = cluster_label
        self._client_factory = docker_client_factory
        self._pool = ThreadPool(
            minthreads=0, maxthreads=slots + CONTROL_THREADS, name="jobsched-docker"
        )
        self._run_slots = DeferredSemaphore(slots)
        self._client: docker.DockerClient | None = None
        self._attempts: dict[str, _Attempt] = {}
        self._idle_waiters: list[Deferred] = []
        self._removals: set[Deferred] = set()
        self._images_present: set[str] = set()
        self._stopping = False

    # -- IExecutor --------------------------------------------------------------

    def start(self) -> Deferred:
        """Start the pool and connect to the engine (the SDK asks its API version)."""
        self._pool.start()
        d = self._in_pool(self._client_factory, max_pool_size=self._slots + EXTRA_CONNECTIONS)
        d.addCallback(self._connected)
        return d

    def stop(self) -> Deferred:
        """Kill every running container, wait for their runs to end, release the pool."""
        self._stopping = True
        if not self._pool.started:
            return succeed(None)
        attempts = list(self._attempts.values())
        for attempt in attempts:
            attempt.interrupt(STOPPED)
        kills = DeferredList([self._kill(a.name) for a in attempts], consumeErrors=True)
        kills.addCallback(self._log_kill_failures)
        kills.addCallback(lambda _: self._wait_idle())
        kills.addCallback(lambda _: DeferredList(list(self._removals), consumeErrors=True))
        kills.addCallback(lambda _: self._in_pool(self._close_client))
        kills.addBoth(self._stop_pool)
        return kills

    def run(self, spec: JobSpec) -> Deferred:
        """Run one attempt; fires with a JobResult (FAILED for any job-level failure)."""
        if self._client is None:
            return fail(RuntimeError("DockerExecutor.run before start()"))
        if self._stopping:
            return succeed(killed(STOPPED, None, None))
        if spec.job_id in self._attempts:
            return fail(ValueError(f"job {spec.job_id} is already running here"))
        attempt = _Attempt(spec, container_name(spec.job_id))
        attempt.fence_token = self._fence.run_started(CONTAINER, attempt.name, spec.job_id)
        if self._fence.lease_expired():  # paused while starting it: see ProcessExecutor.run
            self._fence.run_ended(attempt.fence_token)
            return succeed(killed(LEASE_RAN_OUT, None, None))
        attempt.live = self._live.open(spec.job_id, spec.attempt)
        self._attempts[spec.job_id] = attempt
        delivered: Deferred = Deferred()
        self._run_slots.run(self._run_in_slot, attempt).addBoth(self._deliver, attempt, delivered)
        return delivered

    def cancel(self, job_id: str) -> Deferred:
        """Kill the job's container; its run() then fires with a FAILED `Cancelled`."""
        attempt = self._attempts.get(job_id)
        if attempt is None:
            return succeed(None)
        attempt.interrupt(CANCELLED)
        return self._kill(attempt.name)

    def remove_leftovers(self) -> Deferred:
        """Remove this cluster's containers that no current run owns; fire with job ids."""
        owned = {attempt.name for attempt in self._attempts.values()}
        return self._in_pool(self._remove_leftovers_blocking, owned)

    # -- reactor-side bookkeeping ---------------------------------------------------

    def _connected(self, client: docker.DockerClient) -> None:
        self._client = client

    def _in_pool(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)

    def _run_in_slot(self, attempt: _Attempt) -> Deferred:
        if attempt.interrupted.is_set():
            return succeed(killed(attempt.reason, None, None))
        timeout = attempt.spec.timeout_seconds
        if timeout > 0:
            attempt.timer = self._reactor.callLater(
                timeout, self._time_out, attempt, timed_out_message(timeout)
            )
        d = self._in_pool(
            self._run_blocking, attempt.spec, attempt.name, attempt.interrupted, attempt.live
        )
        d.addCallback(self._remove_after)
        d.addCallback(self._explain_interruption, attempt)
        return d

    def _remove_after(self, outcome: tuple[JobResult, str | None]) -> JobResult:
        """The result goes on at once; the exited container is removed meanwhile, off
        the job's path (removing one takes the engine tens of milliseconds)."""
        result, container_id = outcome
        if container_id is not None:
            removal = self._in_pool(self._remove_blocking, container_id)
            self._removals.add(removal)
            removal.addBoth(lambda _: self._removals.discard(removal))
        return result

    def _explain_interruption(self, result: JobResult, attempt: _Attempt) -> JobResult:
        # A container killed for a timeout, a cancel or a stop exits 137; say why instead.
        if attempt.reason and result.status is not JobStatus.COMPLETED:
            return dataclasses.replace(
                result, exit_code=None, error=attempt.reason, timed_out=attempt.timed_out
            )
        return result

    def _time_out(self, attempt: _Attempt, reason: str) -> None:
        attempt.interrupt(reason, timed_out=True)
        self._kill(attempt.name).addErrback(
            lambda failure: self.log.failure("Could not kill a timed-out job", failure)
        )

    def _deliver(self, outcome: Any, attempt: _Attempt, delivered: Deferred) -> None:
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        del self._attempts[attempt.spec.job_id]
        attempt.live.close()
        self._fence.run_ended(attempt.fence_token)
        delivered.callback(outcome)
        # Only now: whoever waits for idleness may look at the results.
        if not self._attempts:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _wait_idle(self) -> Deferred:
        if not self._attempts:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _kill(self, name: str) -> Deferred:
        return self._in_pool(self._kill_blocking, name)

    def _log_kill_failures(self, outcomes: list) -> None:
        for ok, value in outcomes:
            if not ok:
                self.log.failure("Could not kill a job container on stop", value)

    def _stop_pool(self, outcome: Any) -> Any:
        # Every run has ended and the client is closed: the threads are idle, so
        # joining them is immediate.
        self._pool.stop()
        self._client = None
        if isinstance(outcome, Failure):
            return outcome
        return None

    # -- pool threads ---------------------------------------------------------

    def _run_blocking(
        self, spec: JobSpec, name: str, interrupted: threading.Event, live: LiveOutput
    ) -> tuple[JobResult, str | None]:
        """The attempt's result, and the exited container still to remove (if any)."""
        image = spec.image or self._image
        try:
            self._ensure_image(image)
        except docker.errors.APIError as exc:
            return killed(f"Image not found: {image} ({exc.explanation or exc})", None, None), None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return killed(f"Docker error: {exc}", None, None), None
        if interrupted.is_set():
            return killed("", None, None), None  # the reactor side supplies the reason
        try:
            try:
                return self._run_container(spec, image, name, interrupted, live)
            except docker.errors.ImageNotFound:  # removed since it was last seen: pull
                self._images_present.discard(image)
                self._ensure_image(image)
                return self._run_container(spec, image, name, interrupted, live)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return killed(f"Docker error: {exc}", None, None), None

    def _ensure_image(self, image: str) -> None:
        """Pull `image` unless the engine has it; the pull counts against the timeout.
        An image once seen is not asked about again (a removed one fails the create,
        and the next run looks again)."""
        if image in self._images_present:
            return
        try:
            self._client.images.get(image)
        except docker.errors.ImageNotFound:
            self.log.info("Pulling image {image}", image=image)
            self._client.images.pull(image)
        self._images_present.add(image)

    def _run_container(
        self,
        spec: JobSpec,
        image: str,
        name: str,
        interrupted: threading.Event,
        live: LiveOutput,
    ) -> tuple[JobResult, str]:
        """Create, attach, start, read to the end, wait: five engine calls (the
        container is removed by the caller, after the result has gone on)."""
        api = self._client.api
        host_config = api.create_host_config(
            network_mode="none",
            cap_drop=["ALL"],
            read_only=True,
            tmpfs={"/tmp": f"rw,size={self._tmpfs_size},mode=1777"},
            security_opt=["no-new-privileges"],
            mem_limit=self._memory,
            memswap_limit=self._memory,
            nano_cpus=self._nano_cpus,
            pids_limit=self._pids_limit,
            log_config=LogConfig(type=LogConfig.types.NONE),
        )
        container_id = api.create_container(
            image,
            ["sh", "-c", spec.command],
            name=name,
            labels={CLUSTER_LABEL: self._cluster_label, JOB_LABEL: spec.job_id},
            user=self._user,
            host_config=host_config,
        )["Id"]
        try:
            stdout = CappedBuffer(self._max_output_bytes)
            stderr = CappedBuffer(self._max_output_bytes)
            # Attach before start so no output is missed; the stream ends when the
            # container exits (or is killed).
            frames = api.attach(container_id, stdout=True, stderr=True, stream=True, demux=True)
            try:
                started_at_ms = now_ms()
                api.start(container_id)
                # An interrupt may have tried to kill the container before it ran.
                if interrupted.is_set():
                    self._kill_blocking(name)
                for out, err in frames:
                    stdout.write(out or b"")
                    stderr.write(err or b"")
                    self._hand_over(live, out, err)
            finally:
                frames.close()
            exit_code = api.wait(container_id)["StatusCode"]
        except BaseException:
            self._remove_blocking(container_id)
            raise
        return exited(exit_code, stdout, stderr, started_at_ms), container_id

    def _hand_over(self, live: LiveOutput, out: bytes | None, err: bytes | None) -> None:
        """Give one frame to the live output, on the reactor (before the run's result,
        which reaches the reactor the same way)."""
        if out:
            self._reactor.callFromThread(live.write, STDOUT, out)
        if err:
            self._reactor.callFromThread(live.write, STDERR, err)

    def _kill_blocking(self, name: str) -> None:
        try:
            self._client.api.kill(name)
        except docker.errors.APIError as exc:
            # Gone already (404) or not running (409): nothing left to kill.
            if exc.status_code not in (404, 409):
                raise

    def _remove_blocking(self, container_id: str) -> None:
        try:
            self._client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            # The result stands; the next remove_leftovers() sweeps the container.
            self.log.failure("Could not remove container {id}", id=container_id)

    def _remove_leftovers_blocking(self, owned: set[str]) -> list[str]:
        found = []
        containers = self._client.api.containers(
            all=True, filters={"label": f"{CLUSTER_LABEL}={self._cluster_label}"}
        )
        for info in containers:
            if {n.lstrip("/") for n in info.get("Names") or []} & owned:
                continue
            self._remove_blocking(info["Id"])
            job_id = (info.get("Labels") or {}).get(JOB_LABEL)
            if job_id:
                found.append(job_id)
        return found

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
