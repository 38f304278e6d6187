"""The fault-injection proxy (tests/faultproxy.py), run as its own process against a
threaded echo server and a real gRPC server in this process.

These tests start real processes and block on real sockets; bounds on how long
something takes are generous (PROMPTLY), since the machine may be busy.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2, scheduler_pb2_grpc
from jobsched.config import PeerAddress, parse_peers
from tests.faultproxy import FaultProxy, FaultProxyError
from tests.nodeproc import REPO_ROOT, wait_until

# What "at once" means on a busy machine: an upper bound for things that take
# milliseconds on an idle one. Socket operations time out later than that.
PROMPTLY = 10.0
SOCKET_TIMEOUT = 15.0


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


class _Heartbeats(scheduler_pb2_grpc.InternalServiceServicer):
    def WorkerHeartbeat(self, request, context):
        return scheduler_pb2.WorkerHeartbeatResponse()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
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


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class FaultProxyTestCase(unittest.TestCase):
    """Starts proxies, an echo server and a gRPC server; cleanup stops each."""

    def workdir(self) -> Path:
        """A fresh absolute directory (the proxy process may run elsewhere)."""
        path = Path(self.mktemp()).resolve()
        path.mkdir(parents=True)
        return path

    def start_proxy(self) -> FaultProxy:
        proxy = FaultProxy.start(self.workdir())
        self.addCleanup(proxy.stop)
        return proxy

    def start_echo_server(self) -> int:
        """A threaded TCP echo server on 127.0.0.1; returns its port."""
        server = _EchoServer(("127.0.0.1", 0), _Echo)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

        self.addCleanup(stop)
        return server.server_address[1]

    def start_grpc_server(self) -> int:
        """A gRPC server answering WorkerHeartbeat on 127.0.0.1; returns its port."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        scheduler_pb2_grpc.add_InternalServiceServicer_to_server(_Heartbeats(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(lambda: server.stop(None).wait(timeout=10))
        return port


class LinkModeTests(FaultProxyTestCase):
    """heal, blackhole and delay on raw TCP through the proxy."""

    def test_healed_link_passes_bytes_both_ways(self) -> None:
        proxy = self.start_proxy()
        port = proxy.add_link("a->b", self.start_echo_server())
        payload = os.urandom(1 << 20)
        with connect(port) as sock:
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            self.assertEqual(receive(sock, len(payload)), payload)
            sender.join(timeout=10)
        self.assertEqual(proxy.links()["a->b"]["mode"], "heal")

    def test_blackhole_closes_connections_and_refuses_new_ones(self) -> None:
        proxy = self.start_proxy()
        echo_port = self.start_echo_server()
        port = proxy.add_link("a->b", echo_port)
        with connect(port) as sock:
            sock.sendall(b"ping")
            self.assertEqual(receive(sock, 4), b"ping")
            started = time.monotonic()
            proxy.blackhole("a->b")
            self.assertTrue(is_closed(sock))
            self.assertLess(time.monotonic() - started, PROMPTLY)
        self.assertTrue(refused_or_closed(port))
        self.assertEqual(
            proxy.links()["a->b"],
            {
                "port": port,
                "target_port": echo_port,
                "mode": "blackhole",
                "delay_ms": 0,
                "connections": 0,
            },
        )

    def test_heal_after_blackhole_passes_again(self) -> None:
        proxy = self.start_proxy()
        port = proxy.add_link("a->b", self.start_echo_server())
        proxy.blackhole("a->b")
        self.assertTrue(refused_or_closed(port))
        proxy.heal("a->b")
        self.assertTrue(echoes(port))

    def test_delay_holds_each_direction_and_keeps_order(self) -> None:
        proxy = self.start_proxy()
        port = proxy.add_link("a->b", self.start_echo_server())
        with connect(port) as sock:
            proxy.delay("a->b", 200)
            started = time.monotonic()
            for chunk in (b"one ", b"two ", b"three"):
                sock.sendall(chunk)
            self.assertEqual(receive(sock, 13), b"one two three")
            elapsed = time.monotonic() - started
        # 200 ms on the way to the echo server and 200 ms on the way back.
        self.assertGreaterEqual(elapsed, 0.35)
        self.assertLess(elapsed, PROMPTLY)
        self.assertEqual(proxy.links()["a->b"]["delay_ms"], 200)


class ProxyProcessTests(FaultProxyTestCase):
    """The proxy process: stopped by its handle, or exiting with its parent."""

    def test_stop_kills_the_process(self) -> None:
        echo_port = self.start_echo_server()
        proxy = FaultProxy.start(self.workdir())
        self.addCleanup(proxy.stop)
        port = proxy.add_link("a->b", echo_port)
        pid = proxy.process.pid
        proxy.stop()
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        with self.assertRaises(ConnectionRefusedError):
            connect(port)

    def test_proxy_exits_when_its_parent_dies(self) -> None:
        script = (
            "import sys; from tests.faultproxy import FaultProxy; "
            "print(FaultProxy.start(sys.argv[1]).process.pid)"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, str(self.workdir())],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        pid = int(out)

        def kill_if_left_running() -> None:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)

        self.addCleanup(kill_if_left_running)
        wait_until(lambda: process_gone(pid), 10, f"orphaned proxy {pid} to exit")


class ControlApiTests(FaultProxyTestCase):
    """Cluster links, partitions and refused commands through the control API."""

    def test_cluster_peers_and_partition(self) -> None:
        proxy = self.start_proxy()
        peers = proxy.cluster_peers({1: 5001, 2: 5002, 3: 5003})
        links = proxy.links()
        self.assertEqual(sorted(links), ["1->2", "1->3", "2->1", "2->3", "3->1", "3->2"])
        self.assertEqual(
            {name: link["target_port"] for name, link in links.items()},
            {
                "1->2": 5002,
                "1->3": 5003,
                "2->1": 5001,
                "2->3": 5003,
                "3->1": 5001,
                "3->2": 5002,
            },
        )
        for i, text in peers.items():
            parsed = parse_peers(text)
            self.assertEqual(sorted(parsed), sorted({1, 2, 3} - {i}))
            for j, address in parsed.items():
                self.assertEqual(address, PeerAddress("127.0.0.1", links[f"{i}->{j}"]["port"]))

        proxy.partition([1], [2, 3])
        modes = {name: link["mode"] for name, link in proxy.links().items()}
        self.assertEqual(
            modes,
            {
                "1->2": "blackhole",
                "1->3": "blackhole",
                "2->1": "blackhole",
                "3->1": "blackhole",
                "2->3": "heal",
                "3->2": "heal",
            },
        )
        proxy.heal_all()
        self.assertEqual({link["mode"] for link in proxy.links().values()}, {"heal"})

    def test_a_peer_port_passes_each_leader_through_its_own_link(self) -> None:
        """The first frame's leader_id picks the link: cutting 1->2 closes and refuses
        leader 1's connections to node 2's peer port, not leader 3's."""
        proxy = self.start_proxy()
        echo_port = self.start_echo_server()
        proxy.cluster_peers({1: 5001, 2: 5002, 3: 5003})
        args = proxy.peer_port_args({2: echo_port})
        self.assertEqual(args[2][:3], ["--peer-port", str(echo_port), "--advertise-peer-port"])
        sorted_port = int(args[2][3])

        def frame_of(leader: int) -> bytes:
            message = scheduler_pb2.AppendEntriesRequest(term=1, leader_id=leader)
            body = message.SerializeToString()
            return len(body).to_bytes(4, "big") + body

        with connect(sorted_port) as from_1, connect(sorted_port) as from_3:
            for sock, leader in ((from_1, 1), (from_3, 3)):
                sock.sendall(frame_of(leader))
                self.assertEqual(receive(sock, len(frame_of(leader))), frame_of(leader))
            proxy.partition([1], [2])
            self.assertTrue(is_closed(from_1))
            from_3.sendall(b"ping")
            self.assertEqual(receive(from_3, 4), b"ping")
        with connect(sorted_port) as again_1:
            again_1.sendall(frame_of(1))
            self.assertTrue(is_closed(again_1))
        proxy.heal_all()
        with connect(sorted_port) as healed_1:
            healed_1.sendall(frame_of(1))
            self.assertEqual(receive(healed_1, len(frame_of(1))), frame_of(1))

    def test_bad_commands_are_refused(self) -> None:
        proxy = self.start_proxy()
        proxy.add_link("a->b", 5001)
        with self.assertRaises(FaultProxyError) as caught:
            proxy.add_link("a->b", 5002)
        self.assertRegex(str(caught.exception), "exists already")
        with self.assertRaises(FaultProxyError) as caught:
            proxy.heal("no-such-link")
        self.assertRegex(str(caught.exception), "no-such-link")
        with self.assertRaises(FaultProxyError) as caught:
            proxy.set_mode(["a->b"], "melt")
        self.assertRegex(str(caught.exception), "400")
        self.assertEqual(proxy.links()["a->b"]["mode"], "heal")


class GrpcThroughProxyTests(FaultProxyTestCase):
    """A real gRPC channel through a link: blackholed calls fail, healed ones pass."""

    def test_grpc_through_a_link(self) -> None:
        proxy = self.start_proxy()
        port = proxy.add_link("1->2", self.start_grpc_server())
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = scheduler_pb2_grpc.InternalServiceStub(channel)

            def heartbeat(timeout: float = 1) -> scheduler_pb2.WorkerHeartbeatResponse:
                request = scheduler_pb2.WorkerHeartbeatRequest(node_id=1)
                return stub.WorkerHeartbeat(request, timeout=timeout)

            heartbeat(timeout=PROMPTLY)  # the first call also connects
            self.assertEqual(proxy.links()["1->2"]["connections"], 1)

            proxy.blackhole("1->2")
            with self.assertRaises(grpc.RpcError) as caught:
                heartbeat()
            self.assertIn(
                caught.exception.code(),
                (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
            )

            proxy.heal("1->2")
            wait_until(heartbeat, 3 * PROMPTLY, "a heartbeat through the healed link")
