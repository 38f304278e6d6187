"""A 3-node cluster for chaos runs: process executor, peers wired through the fault
proxy, optionally durable (`--data-dir`), and the faults done to it — SIGKILL and
restart, SIGSTOP and SIGCONT of a node process (never of its fence keeper), cutting a
node off from its peers and healing it. It remembers every process id each node had,
so a job's run (which logs its node's pid) is traced to the node that ran it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from twisted.internet.threads import deferToThread

from tests.faultproxy import FaultProxy
from tests.nodeproc import Cluster, Node, NodeFactory, free_port, wait_for

SETTLE_LEADER_SECONDS = 90


class ChaosCluster:
    """Owned by a test (or by `long.py`'s scope): its nodes and its proxy are killed by
    PID in the owner's cleanup, a paused node is continued first."""

    def __init__(self, owner, proxy: FaultProxy, cluster: Cluster, durable: bool) -> None:
        self.owner = owner
        self.proxy = proxy
        self.cluster = cluster
        self.durable = durable
        self.node_of_pid: dict[int, int] = {}
        self.paused: set[int] = set()
        self.cut_off: set[int] = set()
        self._remember_pids()
        owner.addCleanup(self._continue_all)

    @classmethod
    async def start(
        cls, owner, *, durable: bool, worker_expiry: float, size: int = 3
    ) -> ChaosCluster:
        workdir = Path(owner.mktemp()).resolve()
        workdir.mkdir(parents=True)
        proxy = await deferToThread(FaultProxy.start, workdir)
        owner.addCleanup(proxy.stop)
        factory = NodeFactory.for_test(owner)  # its cleanup runs before the proxy's
        ports = {node_id: free_port() for node_id in range(1, size + 1)}
        peers = await deferToThread(proxy.cluster_peers, ports)
        peer_ports = {node_id: free_port() for node_id in ports}
        peer_port_args = await deferToThread(proxy.peer_port_args, peer_ports)
        extra = ["--worker-expiry", str(worker_expiry)]
        if durable:
            extra += ["--data-dir", str(workdir / "data{node_id}")]
        cluster = Cluster(
            factory,
            size,
            *extra,
            peer_ports=peers.__getitem__,
            grpc_ports=ports,
            node_args=peer_port_args.__getitem__,
        )
        chaos = cls(owner, proxy, cluster, durable)
        await chaos.leader()
        return chaos

    @property
    def nodes(self) -> dict[int, Node]:
        return self.cluster.nodes

    def others(self, node_id: int) -> list[int]:
        return [other for other in self.nodes if other != node_id]

    def healthy(self) -> list[int]:
        """Nodes that run, are not paused and are not cut off."""
        return [
            node_id
            for node_id, node in self.nodes.items()
            if node.is_running() and node_id not in self.paused | self.cut_off
        ]

    async def leader(self, among: list[int] | None = None, timeout: float = 60) -> Node:
        """The leader the healthy nodes (or those of `among`) agree on."""
        return await self.cluster.find_leader(timeout, among=among or self.healthy())

    async def views(self) -> dict:
        """{node id: /api/cluster} of the nodes that answer (a paused node does not)."""
        answers = {}
        for node_id in self.healthy() + sorted(self.cut_off):
            try:
                answer = await self.nodes[node_id].rest("GET", "/api/cluster", timeout=5)
            except Exception:  # a node that does not answer has no view
                continue
            if answer.status == 200:
                answers[node_id] = answer.body
        return answers

    # -- faults --------------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL the node (its fence keeper sees the pipe close and kills its runs)."""
        self.nodes[node_id].kill()

    async def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.start()
        self._remember_pids()
        await node.until_ready(timeout=SETTLE_LEADER_SECONDS)

    def pause(self, node_id: int) -> None:
        """SIGSTOP the node process alone: its fence keeper and its jobs keep running."""
        os.kill(self.nodes[node_id].process.pid, signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self.paused.discard(node_id)
        os.kill(self.nodes[node_id].process.pid, signal.SIGCONT)

    async def cut(self, node_id: int) -> None:
        """Blackhole every link between the node and its peers, both ways."""
        await deferToThread(self.proxy.partition, [node_id], self.others(node_id))
        self.cut_off.add(node_id)

    async def heal(self) -> None:
        await deferToThread(self.proxy.heal_all)
        self.cut_off.clear()

    async def wait_all_ready(self, timeout: float = SETTLE_LEADER_SECONDS) -> None:
        for node in self.nodes.values():
            await node.until_ready(timeout)

    async def until(self, condition, timeout: float, what: str):
        return await wait_for(condition, timeout, what, interval=0.2)

    def _remember_pids(self) -> None:
        for node_id, node in self.nodes.items():
            if node.process is not None:
                self.node_of_pid[node.process.pid] = node_id

    def _continue_all(self) -> None:
        for node_id in list(self.paused):
            try:
                self.resume(node_id)
            except ProcessLookupError:
                pass
