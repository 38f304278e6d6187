"""Real `twistd -n jobsched` processes for integration tests.

Each node runs in its own session, logs to a file, and is killed by PID when the test
ends (`NodeFactory.for_test`). Tests talk to the nodes from the reactor: HTTP through
treq on a connection pool of the test's own, gRPC through the project's bridge
`call_deferred`; both are closed in the test's cleanup. Waits poll a condition with a
deadline on the reactor (`wait_for`); nothing sleeps a fixed time. A request to, or a
wait on, a node that exited without the test stopping it fails at once with its log.

Scripts that run no reactor (bench/) use the blocking twins: `wait_until`, `http`,
`Node.get`, `Node.wait_ready` and `Cluster.leader`.

Nodes of a TLS cluster are given the test client's `ClientCredentials` (tests/pki.py):
gRPC then goes over mutual TLS with its certificate, REST over HTTPS checked against
the CA, and both carry its token unless a call says otherwise (`token=`).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import treq
from twisted.internet import defer, reactor, task
from twisted.internet import ssl as twisted_ssl
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from jobsched._proto import scheduler_pb2_grpc
from jobsched.net.access import AUTHORIZATION
from jobsched.net.channels import TLS_CHANNEL_OPTIONS, open_channel
from jobsched.net.outbound import call_deferred
from tests.pki import ClientCredentials

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_CHARS = 3000

_HANDED_OUT: set = set()
PORTS_FROM = 20000


def free_port() -> int:
    """A free port on 127.0.0.1 that this process has not handed out before (two nodes
    must never get the same one), below the kernel's ephemeral range: a port from that
    range may be taken as the source port of some outbound connection between the
    moment it is handed out and the moment a node binds it."""
    below = _ephemeral_range_start()
    while True:
        port = random.randrange(PORTS_FROM, below)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class DeadNode(AssertionError):
    """A node process ended without a test stopping it."""


async def pause(seconds: float) -> None:
    """Let the reactor run for `seconds` (the interval between two polls)."""
    await task.deferLater(reactor, seconds, lambda: None)


async def _evaluate(condition: Callable[[], object]) -> object:
    value = condition()
    if inspect.isawaitable(value):
        value = await value
    return value


async def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    """Poll `condition` (which may return a Deferred or coroutine) on the reactor until
    it gives something truthy, and return that; fail after `timeout` seconds. Errors
    (a node not up yet, a refused connection...) count as "not yet", except DeadNode."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = await _evaluate(condition)
        except DeadNode:
            raise
        except Exception as error:
            last_error = error
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})"
            )
        await pause(interval)


async def holds_for(
    condition: Callable[[], object], duration: float, what: str, interval: float = 0.1
) -> None:
    """Check `condition` (which may return a Deferred or coroutine) again and again for
    `duration` seconds; fail as soon as it is falsy."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not await _evaluate(condition):
            raise AssertionError(f"{what} stopped holding")
        await pause(interval)


@dataclass
class HttpAnswer:
    """Status, headers (names in lower case) and the JSON (or text) body of an answer."""

    status: int
    headers: dict
    body: object

    @classmethod
    def parse(cls, status: int, headers: dict, payload: bytes) -> HttpAnswer:
        try:
            body = json.loads(payload)
        except ValueError:
            body = payload.decode("utf-8", "replace")
        return cls(status, {name.lower(): value for name, value in headers.items()}, body)


def _request_body(body: object, raw: bytes | None) -> bytes | None:
    return raw if raw is not None else (json.dumps(body).encode() if body is not None else None)


class _Default:
    """The node's own token (of its ClientCredentials), for calls that name none."""


DEFAULT = _Default()


def client_channel(address: str, credentials: ClientCredentials | None) -> grpc.Channel:
    """A gRPC channel as a client with `credentials` opens it (None: plaintext)."""
    if credentials is None:
        return open_channel(address)
    if credentials.tls is None:  # TLS, but no certificate to present
        plain = grpc.ssl_channel_credentials(credentials.ca_cert)
        return grpc.secure_channel(address, plain, options=TLS_CHANNEL_OPTIONS)
    return open_channel(address, credentials.tls)


@dataclass
class Node:
    """One node process, and the clients a test (or a script) talks to it with."""

    node_id: int
    grpc_port: int
    http_port: int
    log_path: Path
    args: list[str]
    stderr_path: Path | None = None  # None: standard error goes to the log too
    process: subprocess.Popen | None = None
    stopped_on_purpose: bool = False
    credentials: ClientCredentials | None = None
    _channel: grpc.Channel | None = field(default=None, repr=False)
    _pool: HTTPConnectionPool | None = field(default=None, repr=False)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.credentials is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def _token(self, token: str | _Default | None) -> str | None:
        if isinstance(token, _Default):
            return self.credentials.token if self.credentials is not None else None
        return token

    # -- the process -------------------------------------------------------------------

    def start(self) -> Node:
        self.stopped_on_purpose = False
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        with contextlib.ExitStack() as files:
            log = files.enter_context(open(self.log_path, "ab"))
            stderr = subprocess.STDOUT
            if self.stderr_path is not None:
                stderr = files.enter_context(open(self.stderr_path, "ab"))
            self.process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "jobsched", *self.args],
                stdout=log,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                cwd=str(self.log_path.parent),
                env=env,
                start_new_session=True,
            )
        return self

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the node by PID and reap it, and wait for its storage writer to end
        (at the end of its stdin, with the transaction it was in): until then the data
        directory is in use. Close its gRPC channel."""
        self.stopped_on_purpose = True
        if self.is_running():
            writers = storage_writers(self.process.pid)
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            deadline = time.monotonic() + 30
            while not all(map(has_ended, writers)):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the storage writer of node {self.node_id} lives on")
                time.sleep(0.01)
        self._close_channel()

    def reap(self) -> None:
        """End the node at the end of a test: SIGKILL, or under `make coverage` a SIGTERM
        first (a node killed outright writes no coverage data), SIGKILL after 10 s."""
        if os.environ.get("JOBSCHED_COVERAGE") and self.is_running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig` and wait (on the reactor) for the node to exit; its exit status."""
        self.stopped_on_purpose = True
        self.process.send_signal(sig)
        await wait_for(
            lambda: self.process.poll() is not None, timeout, f"node {self.node_id} to exit"
        )
        return self.process.returncode

    def check_alive(self) -> None:
        """Fail at once, with the log, if the node exited without being stopped."""
        if self.process is not None and not self.stopped_on_purpose and not self.is_running():
            raise DeadNode(
                f"node {self.node_id} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self) -> str:
        return self.log_text()[-LOG_TAIL_CHARS:]

    # -- clients from the reactor --------------------------------------------------------

    def attach(self, testcase: TestCase) -> Node:
        """Give the node an HTTP connection pool of `testcase`'s own; the test's cleanup
        closes it and the node's gRPC channel."""
        self._pool = HTTPConnectionPool(reactor)
        testcase.addCleanup(self.close_clients)
        return self

    def close_clients(self) -> defer.Deferred:
        self._close_channel()
        pool, self._pool = self._pool, None
        return pool.closeCachedConnections() if pool is not None else defer.succeed(None)

    async def rest(
        self,
        method: str,
        path: str,
        body: object = None,
        raw: bytes | None = None,
        timeout: float = 30,
        content_type: str = "application/json",
        token: str | _Default | None = DEFAULT,
    ) -> HttpAnswer:
        """One HTTP request to the node (a JSON `body`, or `raw` bytes sent as
        `content_type`), with the node's token or `token` (None: no token)."""
        self.check_alive()
        if self._pool is None:  # treq's shared default pool would outlive the test
            raise RuntimeError(f"node {self.node_id} is not attached to a test")
        data = _request_body(body, raw)
        headers = {"Content-Type": [content_type]} if data is not None else {}
        token = self._token(token)
        if token is not None:
            headers["Authorization"] = [f"Bearer {token}"]
        response = await treq.request(
            method,
            self.url + path,
            data=data,
            headers=headers,
            agent=self._agent(),
            timeout=timeout,
        )
        payload = await response.content()
        headers = {
            name.decode(): values[-1].decode()
            for name, values in response.headers.getAllRawHeaders()
        }
        return HttpAnswer.parse(response.code, headers, payload)

    def _agent(self) -> Agent:
        """treq's agent on the test's pool; HTTPS checked against the CA for TLS."""
        if self.credentials is None:
            return Agent(reactor, pool=self._pool)
        trust = twisted_ssl.Certificate.loadPEM(self.credentials.ca_cert)
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
        return Agent(reactor, contextFactory=policy, pool=self._pool)

    def call(
        self,
        method: str,
        request,
        timeout: float = 30,
        token: str | _Default | None = DEFAULT,
    ) -> defer.Deferred:
        """A unary gRPC call by method name (SchedulerService, else InternalService):
        a Deferred of the response, or a CallFailed with `.code` and `.details`."""
        self.check_alive()
        stub = getattr(self.scheduler, method, None) or getattr(self.internal, method)
        return call_deferred(reactor, stub, request, timeout, self.call_metadata(token))

    def call_metadata(self, token: str | _Default | None = DEFAULT) -> tuple:
        """gRPC metadata carrying the node's token or `token` (None: none)."""
        token = self._token(token)
        return ((AUTHORIZATION, f"Bearer {token}"),) if token is not None else ()

    async def until_ready(self, timeout: float = 60) -> None:
        """Wait until /health/ready answers 200 (a node that exits fails at once)."""
        try:
            await wait_for(
                lambda: self.answers(200, "/health/ready"),
                timeout,
                f"node {self.node_id} to be ready",
            )
        except DeadNode:
            raise
        except AssertionError as error:
            raise AssertionError(f"{error}; log:\n{self.log_tail()}") from None

    async def answers(self, status: int, path: str) -> bool:
        """Whether GET `path` answers `status` now."""
        return (await self.rest("GET", path, timeout=5)).status == status

    # -- gRPC stubs (usable with call_deferred, or blocking from a script) -------------

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = client_channel(self.grpc_address, self.credentials)
        return self._channel

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self.channel)

    @property
    def internal(self) -> scheduler_pb2_grpc.InternalServiceStub:
        return scheduler_pb2_grpc.InternalServiceStub(self.channel)

    # -- blocking twins for scripts without a reactor ------------------------------------

    def get(self, path: str) -> HttpAnswer:
        credentials = self.credentials
        if credentials is None:
            return http("GET", self.url + path)
        context = ssl.create_default_context(cadata=credentials.ca_cert.decode())
        return http("GET", self.url + path, context=context, token=credentials.token)

    def wait_ready(self, timeout: float = 20) -> None:
        def ready():
            self.check_alive()
            return self.get("/health/ready").status == 200

        try:
            wait_until(ready, timeout, f"node {self.node_id} to be ready")
        except DeadNode:
            raise
        except AssertionError:
            raise AssertionError(
                f"node {self.node_id} not ready; log:\n{self.log_tail()}"
            ) from None


def has_ended(pid: int) -> bool:
    """Whether process `pid` is gone or a zombie (its files are closed either way: a
    zombie waits only for whoever adopted it to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def child_processes(pids: list[int]) -> list[int]:
    """The live processes whose parent is one of `pids`, from /proc."""
    parents = set(pids)
    children = []
    for process in os.scandir("/proc"):
        if not process.name.isdigit():
            continue
        try:
            with open(os.path.join(process.path, "stat")) as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if parent in parents:
            children.append(int(process.name))
    return children


def storage_writers(pid: int) -> list[int]:
    """The PIDs of the SQLite writer processes the process `pid` started."""
    writers = []
    for child in child_processes([pid]):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if any(arg.endswith(b"sqlite_writer.py") for arg in argv):
            writers.append(child)
    return writers


class NodeFactory:
    """Starts nodes in one working directory and kills every one of them afterwards."""

    def __init__(
        self,
        workdir: Path,
        testcase: TestCase | None = None,
        credentials: ClientCredentials | None = None,
    ) -> None:
        self._workdir = workdir
        self._testcase = testcase
        self.credentials = credentials
        self.nodes: list[Node] = []

    @classmethod
    def for_test(
        cls, testcase: TestCase, credentials: ClientCredentials | None = None
    ) -> NodeFactory:
        """A factory whose nodes log to a directory of `testcase` and are attached to it;
        the test's cleanup kills them all by PID, even when the test fails. With
        `credentials` the test talks to them as that client (a TLS cluster)."""
        workdir = Path(testcase.mktemp()).resolve()
        workdir.mkdir(parents=True)
        factory = cls(workdir, testcase, credentials)
        testcase.addCleanup(factory.kill_all)
        return factory

    def start(
        self,
        *extra_args: str,
        node_id: int = 1,
        peers: str = "",
        grpc_port: int = 0,
        http_port: int = 0,
        separate_stderr: bool = False,
    ) -> Node:
        """Start a node; with `separate_stderr`, its standard error goes to
        `node<id>.stderr` (Node.stderr_path) instead of into its log."""
        grpc_port = grpc_port or free_port()
        http_port = http_port or free_port()
        args = [
            "--node-id",
            str(node_id),
            "--port",
            str(grpc_port),
            "--dashboard-port",
            str(http_port),
            *(["--peers", peers] if peers else []),
            *extra_args,
        ]
        log_path = self._workdir / f"node{node_id}.log"
        node = Node(node_id, grpc_port, http_port, log_path, args, credentials=self.credentials)
        if separate_stderr:
            node.stderr_path = self._workdir / f"node{node_id}.stderr"
        if self._testcase is not None:
            node.attach(self._testcase)
        self.nodes.append(node.start())
        return node

    def kill_all(self) -> None:
        for node in self.nodes:
            node.reap()

    def kill_all_and_remove(self) -> None:
        """Kill every node, then remove the working directory (for one made with
        tempfile, outside any test's own directory)."""
        self.kill_all()
        shutil.rmtree(self._workdir, ignore_errors=True)


class ClassShared:
    """Something the tests of one class share (a cluster, a browser): made by the first
    test that asks, ended after the class's last test, or at exit when a selection of
    tests ran only some of them."""

    def __init__(self, make: Callable[[], Awaitable], end: Callable[[object], None]) -> None:
        self._make = make
        self._end = end
        self._value = None
        self._left = 0

    async def get(self, testcase: unittest.TestCase):
        if self._value is None:
            self._left = len(unittest.TestLoader().getTestCaseNames(type(testcase)))
            self._value = await self._make()
            atexit.register(self.end)
        testcase.addCleanup(self._used)
        return self._value

    def _used(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self.end()

    def end(self) -> None:
        value, self._value = self._value, None
        if value is not None:
            self._end(value)


def peers_arg(node_id: int, ports: dict) -> str:
    """`--peers` for node_id in a cluster whose gRPC ports are {id: port}."""
    return ",".join(
        f"{peer}:127.0.0.1:{port}" for peer, port in sorted(ports.items()) if peer != node_id
    )


def _agreed_leader(views: dict, wanted: list[int], among: list[int] | None) -> int | None:
    """The leader id every node in `wanted` reports, if that node says it leads (and,
    with `among`, is one of them)."""
    if set(wanted) - set(views):
        return None
    leaders = {views[node_id]["leader_id"] for node_id in wanted}
    if len(leaders) != 1 or None in leaders:
        return None
    leader_id = leaders.pop()
    if among and leader_id not in among:
        return None
    if views.get(leader_id, {}).get("role") != "leader":
        return None
    return leader_id


class Cluster:
    """N nodes started together; helpers to find the leader as the nodes report it.
    `{node_id}` in an extra argument becomes each node's id (e.g. a data directory)."""

    def __init__(
        self,
        factory: NodeFactory,
        size: int,
        *extra_args: str,
        peer_ports: Callable[[int], str] | None = None,
        grpc_ports: dict | None = None,
        node_args: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.grpc_ports = grpc_ports or {node_id: free_port() for node_id in range(1, size + 1)}
        self.nodes: dict[int, Node] = {}
        for node_id, port in self.grpc_ports.items():
            peers = peer_ports(node_id) if peer_ports else peers_arg(node_id, self.grpc_ports)
            args = [arg.replace("{node_id}", str(node_id)) for arg in extra_args]
            args += node_args(node_id) if node_args else []
            self.nodes[node_id] = factory.start(
                "--executor",
                "process",
                *args,
                node_id=node_id,
                peers=peers,
                grpc_port=port,
            )

    def live_nodes(self) -> list[Node]:
        return [node for node in self.nodes.values() if node.is_running()]

    def check_no_node_died(self) -> None:
        """Fail at once, with its log, if a node exited that no test stopped."""
        for node in self.nodes.values():
            node.check_alive()

    async def views(self) -> dict:
        """{node_id: /api/cluster body} of every live node that answers."""
        self.check_no_node_died()
        live = self.live_nodes()
        answers = await defer.DeferredList(
            [defer.ensureDeferred(node.rest("GET", "/api/cluster", timeout=5)) for node in live],
            consumeErrors=True,
        )
        return {
            node.node_id: answer.body
            for node, (ok, answer) in zip(live, answers, strict=True)
            if ok and answer.status == 200
        }

    async def view(self, node_id: int) -> dict:
        """/api/cluster of one node."""
        return (await self.nodes[node_id].rest("GET", "/api/cluster")).body

    async def batching_leader(self, timeout: float = 30) -> Node:
        """The leader, once the cluster writes the batched entry forms (from when every
        node has said it applies them; before, one entry per job: docs/operations.md)."""

        async def batching():
            leader = await self.find_leader()
            return leader if (await self.view(leader.node_id))["entry_forms"] >= 2 else None

        return await wait_for(batching, timeout, "the leader to hear every node's entry forms")

    async def find_leader(self, timeout: float = 60, among: list[int] | None = None) -> Node:
        """The node every live node (or those in `among`) agrees is the leader; with
        `among`, the leader must be one of them (a stale view of an old leader is not)."""

        async def agreed():
            views = await self.views()
            wanted = among or [node.node_id for node in self.live_nodes()]
            leader_id = _agreed_leader(views, wanted, among)
            return self.nodes[leader_id] if leader_id is not None else None

        return await wait_for(agreed, timeout, "the nodes to agree on one leader")

    async def until_all_live(self, timeout: float = 60) -> None:
        for node in self.nodes.values():
            await wait_for(
                lambda node=node: node.answers(200, "/health/live"),
                timeout,
                f"node {node.node_id} to answer",
            )

    # -- blocking twins for scripts without a reactor ------------------------------------

    def cluster_views(self) -> dict:
        views = {}
        for node in self.live_nodes():
            try:
                answer = node.get("/api/cluster")
            except OSError:
                continue
            if answer.status == 200:
                views[node.node_id] = answer.body
        return views

    def leader(self, timeout: float = 10, among: list[int] | None = None) -> Node:
        def agreed():
            self.check_no_node_died()
            views = self.cluster_views()
            wanted = among or [node.node_id for node in self.live_nodes()]
            leader_id = _agreed_leader(views, wanted, among)
            return self.nodes[leader_id] if leader_id is not None else None

        return wait_until(agreed, timeout, "the nodes to agree on one leader")


def metric_samples(text: str) -> dict[str, float]:
    """{`name` or `name{label="value",...}`: value} of a /metrics answer (labels sorted)."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Blocking poll of `condition` until it returns something truthy (scripts only: it
    sleeps, so never call it under the reactor); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except DeadNode:
            raise
        except Exception as error:  # a node not up yet, a refused connection...
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def http(
    method: str,
    url: str,
    body: object = None,
    raw: bytes | None = None,
    timeout: float = 10,
    context: ssl.SSLContext | None = None,
    token: str | None = None,
) -> HttpAnswer:
    """One blocking HTTP request (scripts only); status, headers and the body."""
    data = _request_body(body, raw)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, dict(error.headers), error.read()
    return HttpAnswer.parse(status, headers, payload)
