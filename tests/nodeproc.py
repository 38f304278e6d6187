"""Real `twistd -n jobsched` processes for integration tests.

Each node runs in its own session, logs to a file, and is killed by PID when the test
ends. Waits poll a condition with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from jobsched._proto import scheduler_pb2_grpc

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
REPO_ROOT = Path(__file__).resolve().parent.parent


_HANDED_OUT: set = set()


def free_port() -> int:
    """A free port on 127.0.0.1 that this process has not handed out before (the kernel
    may offer a just-closed port again, and two nodes must never get the same one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
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


@dataclass
class HttpAnswer:
    status: int
    headers: dict
    body: object


def http(
    method: str, url: str, body: object = None, raw: bytes | None = None, timeout: float = 10
) -> HttpAnswer:
    """One HTTP request; returns status, headers and the JSON (or text) body."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, dict(error.headers), error.read()
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = payload.decode("utf-8", "replace")
    return HttpAnswer(status, headers, parsed)


@dataclass
class Node:
    """One running node process and its clients."""

    node_id: int
    grpc_port: int
    http_port: int
    log_path: Path
    args: list[str]
    process: subprocess.Popen | None = None
    stopped_on_purpose: bool = False
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Node:
        self.stopped_on_purpose = False
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "jobsched", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(self.log_path.parent),
            env=env,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.stopped_on_purpose = True
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def stop_gracefully(self, timeout: float = 40) -> int:
        """SIGTERM the node and return its exit status."""
        self.stopped_on_purpose = True
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> HttpAnswer:
        return http("GET", self.url + path)

    def wait_ready(self, timeout: float = 20) -> None:
        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"node {self.node_id} exited:\n{self.log_text()[-3000:]}")
            return self.get("/health/ready").status == 200

        try:
            wait_until(ready, timeout, f"node {self.node_id} to be ready")
        except AssertionError:
            raise AssertionError(f"node {self.node_id} not ready; log:\n{self.log_text()[-3000:]}")

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_address)
        return self._channel

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self.channel)

    @property
    def internal(self) -> scheduler_pb2_grpc.InternalServiceStub:
        return scheduler_pb2_grpc.InternalServiceStub(self.channel)


class NodeFactory:
    """Starts nodes for one test and kills every one of them afterwards."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.nodes: list[Node] = []

    def start(
        self,
        *extra_args: str,
        node_id: int = 1,
        peers: str = "",
        grpc_port: int = 0,
        http_port: int = 0,
    ) -> Node:
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
        node = Node(node_id, grpc_port, http_port, self._workdir / f"node{node_id}.log", args)
        self.nodes.append(node.start())
        return node

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()


def peers_arg(node_id: int, ports: dict) -> str:
    """`--peers` for node_id in a cluster whose gRPC ports are {id: port}."""
    return ",".join(
        f"{peer}:127.0.0.1:{port}" for peer, port in sorted(ports.items()) if peer != node_id
    )


class DeadNode(AssertionError):
    """A node process ended without a test stopping it."""


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
    ) -> None:
        self.grpc_ports = grpc_ports or {node_id: free_port() for node_id in range(1, size + 1)}
        self.nodes = {}
        for node_id, port in self.grpc_ports.items():
            peers = peer_ports(node_id) if peer_ports else peers_arg(node_id, self.grpc_ports)
            args = [arg.replace("{node_id}", str(node_id)) for arg in extra_args]
            self.nodes[node_id] = factory.start(
                "--executor",
                "process",
                *args,
                node_id=node_id,
                peers=peers,
                grpc_port=port,
            )

    def live_nodes(self) -> list[Node]:
        return [
            node
            for node in self.nodes.values()
            if node.process is not None and node.process.poll() is None
        ]

    def cluster_views(self) -> dict:
        """{node_id: /api/cluster body} of every live node that answers."""
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
        """The node every live node (or those in `among`) agrees is the leader; with
        `among`, the leader must be one of them (a stale view of an old leader is not)."""

        def agreed():
            self.check_no_node_died()
            views = self.cluster_views()
            wanted = among or [node.node_id for node in self.live_nodes()]
            if set(wanted) - set(views):
                return None
            leaders = {views[node_id]["leader_id"] for node_id in wanted}
            if len(leaders) == 1 and None not in leaders:
                leader_id = leaders.pop()
                if among and leader_id not in among:
                    return None
                if views.get(leader_id, {}).get("role") == "leader":
                    return self.nodes[leader_id]
            return None

        return wait_until(agreed, timeout, "the nodes to agree on one leader")

    def check_no_node_died(self) -> None:
        """Fail at once, with its log, if a node exited that no test stopped."""
        for node in self.nodes.values():
            if node.process.poll() is not None and not node.stopped_on_purpose:
                raise DeadNode(
                    f"node {node.node_id} exited with {node.process.returncode}:\n"
                    f"{node.log_text()[-3000:]}"
                )

    def wait_all_live(self, timeout: float = 30) -> None:
        for node in self.nodes.values():
            wait_until(
                lambda: node.get("/health/live").status == 200,
                timeout,
                f"node {node.node_id} to answer",
            )
