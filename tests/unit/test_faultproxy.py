"""The fault-injection proxy (tests/faultproxy.py), run as its own process against a
threaded echo server and a real gRPC server in this process."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from jobsched._proto import scheduler_pb2, scheduler_pb2_grpc
from jobsched.config import PeerAddress, parse_peers
from tests.faultproxy import FaultProxy, FaultProxyError
from tests.nodeproc import REPO_ROOT, wait_until

pytestmark = pytest.mark.slow


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[FaultProxy]:
    with FaultProxy.start(tmp_path) as running:
        yield running


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes, or fewer if the connection closes first."""
    chunks = []
    while size > 0:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def is_closed(sock: socket.socket) -> bool:
    """True once the peer has closed or reset the connection (waits up to the timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def echoes(port: int) -> bool:
    with connect(port) as sock:
        sock.sendall(b"ping")
        return receive(sock, 4) == b"ping"


def refused_or_closed(port: int) -> bool:
    try:
        sock = connect(port)
    except ConnectionError:
        return True
    with sock:
        try:
            sock.sendall(b"ping")
        except ConnectionError:
            return True
        return is_closed(sock)


def test_healed_link_passes_bytes_both_ways(proxy: FaultProxy, echo_port: int) -> None:
    port = proxy.add_link("a->b", echo_port)
    payload = os.urandom(1 << 20)
    with connect(port) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert receive(sock, len(payload)) == payload
        sender.join(timeout=10)
    assert proxy.links()["a->b"]["mode"] == "heal"


def test_blackhole_closes_connections_and_refuses_new_ones(
    proxy: FaultProxy, echo_port: int
) -> None:
    port = proxy.add_link("a->b", echo_port)
    with connect(port) as sock:
        sock.sendall(b"ping")
        assert receive(sock, 4) == b"ping"
        started = time.monotonic()
        proxy.blackhole("a->b")
        assert is_closed(sock)
        assert time.monotonic() - started < 3
    assert refused_or_closed(port)
    assert proxy.links()["a->b"] == {
        "port": port,
        "target_port": echo_port,
        "mode": "blackhole",
        "delay_ms": 0,
        "connections": 0,
    }


def test_heal_after_blackhole_passes_again(proxy: FaultProxy, echo_port: int) -> None:
    port = proxy.add_link("a->b", echo_port)
    proxy.blackhole("a->b")
    assert refused_or_closed(port)
    proxy.heal("a->b")
    assert echoes(port)


def test_delay_holds_each_direction_and_keeps_order(proxy: FaultProxy, echo_port: int) -> None:
    port = proxy.add_link("a->b", echo_port)
    with connect(port) as sock:
        proxy.delay("a->b", 200)
        started = time.monotonic()
        for chunk in (b"one ", b"two ", b"three"):
            sock.sendall(chunk)
        assert receive(sock, 13) == b"one two three"
        elapsed = time.monotonic() - started
    # 200 ms on the way to the echo server and 200 ms on the way back.
    assert 0.35 <= elapsed < 3.0
    assert proxy.links()["a->b"]["delay_ms"] == 200


def test_stop_kills_the_process(tmp_path: Path, echo_port: int) -> None:
    proxy = FaultProxy.start(tmp_path)
    port = proxy.add_link("a->b", echo_port)
    pid = proxy.process.pid
    proxy.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        connect(port)


def test_proxy_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = (
        "import sys; from tests.faultproxy import FaultProxy; "
        "print(FaultProxy.start(sys.argv[1]).process.pid)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    pid = int(out)

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except FileNotFoundError:
            return True

    wait_until(gone, 10, f"orphaned proxy {pid} to exit")


def test_cluster_peers_and_partition(proxy: FaultProxy) -> None:
    peers = proxy.cluster_peers({1: 5001, 2: 5002, 3: 5003})
    links = proxy.links()
    assert sorted(links) == ["1->2", "1->3", "2->1", "2->3", "3->1", "3->2"]
    assert {name: link["target_port"] for name, link in links.items()} == {
        "1->2": 5002,
        "1->3": 5003,
        "2->1": 5001,
        "2->3": 5003,
        "3->1": 5001,
        "3->2": 5002,
    }
    for i, text in peers.items():
        parsed = parse_peers(text)
        assert sorted(parsed) == sorted({1, 2, 3} - {i})
        for j, address in parsed.items():
            assert address == PeerAddress("127.0.0.1", links[f"{i}->{j}"]["port"])

    proxy.partition([1], [2, 3])
    modes = {name: link["mode"] for name, link in proxy.links().items()}
    assert modes == {
        "1->2": "blackhole",
        "1->3": "blackhole",
        "2->1": "blackhole",
        "3->1": "blackhole",
        "2->3": "heal",
        "3->2": "heal",
    }
    proxy.heal_all()
    assert {link["mode"] for link in proxy.links().values()} == {"heal"}


def test_bad_commands_are_refused(proxy: FaultProxy) -> None:
    proxy.add_link("a->b", 5001)
    with pytest.raises(FaultProxyError, match="exists already"):
        proxy.add_link("a->b", 5002)
    with pytest.raises(FaultProxyError, match="no-such-link"):
        proxy.heal("no-such-link")
    with pytest.raises(FaultProxyError, match="400"):
        proxy.set_mode(["a->b"], "melt")
    assert proxy.links()["a->b"]["mode"] == "heal"


class _Heartbeats(scheduler_pb2_grpc.InternalServiceServicer):
    def WorkerHeartbeat(self, request, context):
        return scheduler_pb2.WorkerHeartbeatResponse()


@pytest.fixture
def grpc_port() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    scheduler_pb2_grpc.add_InternalServiceServicer_to_server(_Heartbeats(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait(timeout=10)


def test_grpc_through_a_link(proxy: FaultProxy, grpc_port: int) -> None:
    port = proxy.add_link("1->2", grpc_port)
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = scheduler_pb2_grpc.InternalServiceStub(channel)

        def heartbeat() -> scheduler_pb2.WorkerHeartbeatResponse:
            return stub.WorkerHeartbeat(scheduler_pb2.WorkerHeartbeatRequest(node_id=1), timeout=1)

        heartbeat()
        assert proxy.links()["1->2"]["connections"] == 1

        proxy.blackhole("1->2")
        with pytest.raises(grpc.RpcError) as failure:
            heartbeat()
        assert failure.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )

        proxy.heal("1->2")
        wait_until(heartbeat, 5, "a heartbeat through the healed link")
