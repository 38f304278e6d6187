"""Fault injection on real TCP traffic between real processes, for integration tests.

A separate Twisted process (``python tests/faultproxy.py``) runs one listening port per
directed *link* on 127.0.0.1, each forwarding to a target port. A small JSON-over-HTTP
control API changes a link's mode:

- ``heal``: pass bytes through both ways.
- ``delay``: pass bytes through, each chunk (and the closing of a side) ``delay_ms``
  later than it arrived, order preserved, both ways.
- ``blackhole``: abort every connection of the link and abort new ones as soon as they
  are accepted. Dropping bytes from the middle of an HTTP/2 stream would corrupt it
  rather than partition it, so a blackhole closes instead: gRPC calls over the link fail
  with UNAVAILABLE (or DEADLINE_EXCEEDED) until it heals and the channel reconnects.

A node's peer port (where its leader sends AppendEntries outside gRPC) gets one
listening port per node instead (``peer_port_args``): each connection there is held
until its first frame names the leader that sent it, then passes through the link from
that leader to the node, so a cut stops a leader's gRPC and peer-port traffic alike.

`FaultProxy` is the client the tests use from the pytest process; it runs no reactor.
Production nodes never import this module: they are only given link ports as peers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

MODES = ("heal", "blackhole", "delay")
HOST = "127.0.0.1"


# -- the proxy process ---------------------------------------------------------------


class Link:
    """One directed link: a listening port forwarding to `target_port`, and its mode."""

    def __init__(self, name: str, target_port: int) -> None:
        self.name = name
        self.target_port = target_port
        self.port = 0
        self.mode = "heal"
        self.delay_ms = 0
        self.ends: set[_End] = set()

    def set_mode(self, mode: str, delay_ms: int = 0) -> None:
        self.mode = mode
        self.delay_ms = delay_ms if mode == "delay" else 0
        if mode == "blackhole":
            for end in list(self.ends):
                end.abort()

    def describe(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "target_port": self.target_port,
            "mode": self.mode,
            "delay_ms": self.delay_ms,
            "connections": len(self.ends) // 2,
        }


class _End(Protocol):
    """One TCP connection of a proxied pair: what it receives goes to the other end,
    after the link's delay."""

    def __init__(self, link: Link, reactor: Any) -> None:
        self.link = link
        self.reactor = reactor
        self.other: _End | None = None
        self.closed = False
        self._queue: deque[tuple[float, bytes | None]] = deque()
        self._timer: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self.other is not None:
            self.other.deliver(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        self.link.ends.discard(self)
        self._cancel_timer()
        if self.other is not None:
            self.other.deliver(None)

    def deliver(self, item: bytes | None) -> None:
        """Write `item` to this end (None: close it) once the link's delay has passed."""
        if self.closed:
            return
        delay = self.link.delay_ms / 1000.0
        if delay == 0 and not self._queue:
            self._write(item)
            return
        self._queue.append((self.reactor.seconds() + delay, item))
        self._schedule()

    def abort(self) -> None:
        self._queue.clear()
        self._cancel_timer()
        self.transport.abortConnection()

    def _write(self, item: bytes | None) -> None:
        if item is None:
            self.transport.loseConnection()
        else:
            self.transport.write(item)

    def _schedule(self) -> None:
        if self._timer is None and self._queue:
            wait = max(0.0, self._queue[0][0] - self.reactor.seconds())
            self._timer = self.reactor.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self.reactor.seconds()
        while self._queue and self._queue[0][0] <= now and not self.closed:
            self._write(self._queue.popleft()[1])
        self._schedule()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _Inbound(_End):
    """The connection a node dialed: refused while blackholed, else paired with a new
    connection to the link's target."""

    def connectionMade(self) -> None:
        self.pair(self.link.target_port)

    def pair(self, target_port: int) -> None:
        if self.link.mode == "blackhole":
            self.closed = True
            self.transport.abortConnection()
            return
        self.link.ends.add(self)
        self.transport.pauseProducing()
        outbound = _Outbound(self.link, self.reactor)
        outbound.other = self
        endpoint = TCP4ClientEndpoint(self.reactor, HOST, target_port, timeout=5)
        connectProtocol(endpoint, outbound).addErrback(lambda _: self.abort())

    def paired(self) -> None:
        """The connection to the target is up (before the flow starts)."""


class _SortedInbound(_Inbound):
    """A connection to a node's peer port: held until its first frame (a 4-byte length
    and an AppendEntriesRequest) names the leader that sent it, then passed through the
    link from that leader to the node, as the leader's gRPC calls are."""

    def __init__(self, sorter: PeerPortSorter, reactor: Any) -> None:
        super().__init__(None, reactor)
        self.sorter = sorter
        self.held = b""

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        if self.link is not None:
            super().dataReceived(data)
            return
        self.held += data
        if len(self.held) < 4:
            return
        size = int.from_bytes(self.held[:4], "big")
        if len(self.held) < 4 + size:
            return
        from jobsched._proto import scheduler_pb2 as pb

        try:
            leader = pb.AppendEntriesRequest.FromString(self.held[4 : 4 + size]).leader_id
        except Exception:  # not a frame of ours: let the node refuse it, unsorted
            leader = 0
        self.link = self.sorter.link_from(leader)
        self.pair(self.sorter.target_port)

    def paired(self) -> None:
        held, self.held = self.held, b""
        self.other.deliver(held)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.link is None:
            self.closed = True
            return
        super().connectionLost(reason)


class PeerPortSorter:
    """One node's peer port behind the proxy: connections pass through the directed
    link from the leader that sent them (a leader of no link: an unfaulted one)."""

    def __init__(self, node: str, target_port: int, links: dict[str, Link]) -> None:
        self.node = node
        self.target_port = target_port
        self._links = links
        self._unsorted = Link(f"?->{node} (peer port)", target_port)

    def link_from(self, leader: int) -> Link:
        return self._links.get(link_name(leader, self.node), self._unsorted)


class _Outbound(_End):
    """The proxy's connection to the target; starts the flow once it is up."""

    def connectionMade(self) -> None:
        inbound = self.other
        if inbound is None or inbound.closed or self.link.mode == "blackhole":
            self.closed = True
            self.transport.abortConnection()
            return
        self.link.ends.add(self)
        inbound.other = self
        self.transport.registerProducer(inbound.transport, True)
        inbound.transport.registerProducer(self.transport, True)
        inbound.paired()
        inbound.transport.resumeProducing()


class ControlResource(Resource):
    """JSON API: GET /links; POST /links {name, target_port}; POST /state {links, mode,
    delay_ms}."""

    isLeaf = True
    log = Logger()

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        self.links: dict[str, Link] = {}

    def render_GET(self, request: Request) -> bytes:
        if request.path != b"/links":
            return self._answer(request, 404, {"error": "no such resource"})
        return self._answer(
            request, 200, {name: link.describe() for name, link in self.links.items()}
        )

    def render_POST(self, request: Request) -> bytes:
        try:
            body = json.loads(request.content.read() or b"{}")
            if request.path == b"/links":
                answer = self._add_link(body["name"], body["target_port"])
                return self._answer(request, 200, answer)
            if request.path == b"/peer-ports":
                answer = self._add_sorter(str(body["node"]), int(body["target_port"]))
                return self._answer(request, 200, answer)
            if request.path == b"/state":
                self._set_state(body["links"], body["mode"], body.get("delay_ms", 0))
                return self._answer(request, 200, {})
            return self._answer(request, 404, {"error": "no such resource"})
        except (ValueError, KeyError, TypeError) as error:
            return self._answer(request, 400, {"error": f"{type(error).__name__}: {error}"})

    def _add_link(self, name: str, target_port: int) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a link name is a non-empty string (got {name!r})")
        if name in self.links:
            raise ValueError(f"link {name!r} exists already")
        link = Link(name, int(target_port))
        factory = Factory.forProtocol(lambda: _Inbound(link, self.reactor))
        link.port = self.reactor.listenTCP(0, factory, interface=HOST).getHost().port
        self.links[name] = link
        self.log.info(
            "link {name}: :{port} -> :{target}", name=name, port=link.port, target=link.target_port
        )
        return {"port": link.port}

    def _add_sorter(self, node: str, target_port: int) -> dict[str, Any]:
        sorter = PeerPortSorter(node, target_port, self.links)
        factory = Factory.forProtocol(lambda: _SortedInbound(sorter, self.reactor))
        port = self.reactor.listenTCP(0, factory, interface=HOST).getHost().port
        self.log.info(
            "peer port of {node}: :{port} -> :{target}", node=node, port=port, target=target_port
        )
        return {"port": port}

    def _set_state(self, names: list[str], mode: str, delay_ms: int) -> None:
        unknown = [name for name in names if name not in self.links]
        if unknown:
            raise ValueError(f"no such links: {unknown}")
        if mode not in MODES or int(delay_ms) < 0:
            raise ValueError(f"mode must be one of {MODES} and delay_ms >= 0")
        for link in (self.links[name] for name in names):
            link.set_mode(mode, int(delay_ms))
            self.log.info(
                "link {name}: {mode} ({delay} ms)", name=link.name, mode=mode, delay=link.delay_ms
            )

    @staticmethod
    def _answer(request: Request, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()


def main(argv: list | None = None) -> None:
    """Run the proxy until killed, or until the process that started it goes away."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--port-file", required=True, help="JSON {control_port, pid}, once ready")
    parser.add_argument("--parent-pid", type=int, help="exit when this parent is gone")
    args = parser.parse_args(argv)

    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    site = Site(ControlResource(reactor))
    site.noisy = False
    control_port = reactor.listenTCP(args.control_port, site, interface=HOST).getHost().port
    temporary = args.port_file + ".tmp"
    with open(temporary, "w") as handle:
        json.dump({"control_port": control_port, "pid": os.getpid()}, handle)
    os.replace(temporary, args.port_file)
    if args.parent_pid:

        def check_parent() -> None:
            if os.getppid() != args.parent_pid:
                reactor.stop()

        task.LoopingCall(check_parent).start(0.5)
    reactor.run()


# -- the client, used from the pytest process ----------------------------------------


class FaultProxyError(RuntimeError):
    """The proxy refused a command or could not be started."""


def link_name(source: int | str, target: int | str) -> str:
    """The name `cluster_peers` gives the link that `source` dials `target` through."""
    return f"{source}->{target}"


class FaultProxy:
    """Handle on a running proxy process: create links and change their modes."""

    def __init__(self, process: subprocess.Popen, control_port: int, log_path: Path) -> None:
        self.process = process
        self.control_port = control_port
        self.log_path = log_path

    @classmethod
    def start(cls, workdir: str | Path, timeout: float = 15.0) -> FaultProxy:
        """Spawn the proxy in its own session and wait until its control port is up."""
        workdir = Path(workdir)
        port_file = workdir / "faultproxy.port"
        log_path = workdir / "faultproxy.log"
        port_file.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--port-file",
                    str(port_file),
                    "--parent-pid",
                    str(os.getpid()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=10)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise FaultProxyError(f"fault proxy did not start within {timeout}s:\n{tail}")
            time.sleep(0.02)
        return cls(process, json.loads(port_file.read_text())["control_port"], log_path)

    def add_link(self, name: str, target_port: int) -> int:
        """Create link `name` forwarding to 127.0.0.1:`target_port`; return its port."""
        return self._call("POST", "/links", {"name": name, "target_port": target_port})["port"]

    def links(self) -> dict[str, dict[str, Any]]:
        """Every link: port, target_port, mode, delay_ms, connections."""
        return self._call("GET", "/links")

    def set_mode(self, names: Iterable[str], mode: str, delay_ms: int = 0) -> None:
        """Change several links at once (atomically, in one reactor turn)."""
        self._call("POST", "/state", {"links": list(names), "mode": mode, "delay_ms": delay_ms})

    def heal(self, *names: str) -> None:
        self.set_mode(names, "heal")

    def blackhole(self, *names: str) -> None:
        self.set_mode(names, "blackhole")

    def delay(self, name: str, ms: int) -> None:
        self.set_mode([name], "delay", ms)

    def heal_all(self) -> None:
        self.set_mode(self.links(), "heal")

    def partition(self, group_a: Iterable[int | str], group_b: Iterable[int | str]) -> None:
        """Blackhole every link between the two groups of node ids, both directions."""
        group_b = list(group_b)
        names = [
            name for a in group_a for b in group_b for name in (link_name(a, b), link_name(b, a))
        ]
        self.blackhole(*names)

    def cluster_peers(self, grpc_ports: Mapping[int, int]) -> dict[int, str]:
        """Create link "i->j" for every ordered pair of nodes (node id -> real gRPC port)
        and return each node's ``--peers`` value, which dials the others via its links."""
        peers: dict[int, str] = {}
        for i in grpc_ports:
            entries = []
            for j, port in grpc_ports.items():
                if j != i:
                    entries.append(f"{j}:{HOST}:{self.add_link(link_name(i, j), port)}")
            peers[i] = ",".join(entries)
        return peers

    def peer_port_args(self, real_ports: Mapping[int, int]) -> dict[int, list[str]]:
        """Put each node's peer port (`real_ports[j]`, which node j binds) behind the
        proxy: a connection to it passes through link "i->j" of the leader i its first
        AppendEntries names. Returns each node's options: it binds the real port and
        names the proxy's to its leaders."""
        args = {}
        for node, port in real_ports.items():
            advertised = self._call("POST", "/peer-ports", {"node": node, "target_port": port})
            args[node] = [
                "--peer-port",
                str(port),
                "--advertise-peer-port",
                str(advertised["port"]),
            ]
        return args

    def stop(self) -> None:
        """Kill the proxy by PID and wait for it; every link closes with it."""
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://{HOST}:{self.control_port}{path}", data=data, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise FaultProxyError(
                f"{method} {path}: {error.code} {error.read().decode()}"
            ) from None


if __name__ == "__main__":
    main()
