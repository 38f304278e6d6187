"""Partitions on real traffic: nodes talk through the fault-injection proxy."""

from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.net.outbound import CallFailed
from tests.faultproxy import FaultProxy
from tests.integration.test_cluster import job_table, submit_all
from tests.nodeproc import Cluster, NodeFactory, free_port, holds_for, wait_for


class PartitionTests(unittest.TestCase):
    """Each test has its own proxy process and cluster, killed by PID in cleanup. The
    proxy's client blocks, so it is driven from a thread."""

    timeout = 300

    async def setUp(self) -> None:
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        self.proxy = await deferToThread(FaultProxy.start, workdir)
        self.addCleanup(self.proxy.stop)
        self.nodes = NodeFactory.for_test(self)  # its cleanup runs before the proxy's

    async def proxied_cluster(self, size: int) -> Cluster:
        ports = {node_id: free_port() for node_id in range(1, size + 1)}
        peers = await deferToThread(self.proxy.cluster_peers, ports)
        peer_ports = {node_id: free_port() for node_id in ports}
        peer_port_args = await deferToThread(self.proxy.peer_port_args, peer_ports)
        return Cluster(
            self.nodes,
            size,
            peer_ports=peers.__getitem__,
            grpc_ports=ports,
            node_args=peer_port_args.__getitem__,
        )

    async def roles(self, cluster: Cluster, ids: list) -> dict:
        views = await cluster.views()
        return {node_id: views[node_id]["role"] for node_id in ids if node_id in views}

    async def test_five_nodes_split_three_two_only_the_majority_commits(self):
        cluster = await self.proxied_cluster(5)
        old_leader = await cluster.find_leader()
        minority = [old_leader.node_id, next(n for n in cluster.nodes if n != old_leader.node_id)]
        majority = [n for n in cluster.nodes if n not in minority]
        acked_before = await submit_all(old_leader, 10, prefix="before")

        await deferToThread(self.proxy.partition, minority, majority)
        new_leader = await cluster.find_leader(among=majority)
        self.assertIn(new_leader.node_id, majority)
        acked_during = await submit_all(new_leader, 10, prefix="during")

        async def minority_leaderless():
            return "leader" not in (await self.roles(cluster, minority)).values()

        await wait_for(minority_leaderless, 30, "the isolated old leader to step down")
        for node_id in minority:  # within an election timeout of the leader stepping down
            await wait_for(
                lambda node_id=node_id: cluster.nodes[node_id].answers(503, "/health/ready"),
                30,
                f"node {node_id}'s readiness to turn 503",
            )
        await holds_for(minority_leaderless, 2, "the minority having no leader")
        with self.assertRaises(CallFailed):
            await old_leader.call("SubmitJob", pb.SubmitJobRequest(command="true"), timeout=6)
        views = await cluster.views()
        minority_commit = {n: views[n]["commit_index"] for n in minority}

        await deferToThread(self.proxy.heal_all)
        leader = await cluster.find_leader()
        self.assertIn(leader.node_id, majority)  # the minority's logs are behind: it cannot win

        async def converged():
            views = await cluster.views()
            marks = {(v["commit_index"], v["log_length"], v["leader_id"]) for v in views.values()}
            return len(views) == 5 and len(marks) == 1

        await wait_for(converged, 60, "every log to converge on one leader")
        tables = [await job_table(node) for node in cluster.nodes.values()]
        self.assertTrue(all(table == tables[0] for table in tables))
        self.assertLessEqual(set(acked_before + acked_during), set(tables[0]))
        views = await cluster.views()
        for node_id in minority:
            self.assertGreater(views[node_id]["commit_index"], minority_commit[node_id])

    async def test_a_follower_cut_off_and_back_does_not_raise_the_term(self):
        cluster = await self.proxied_cluster(3)
        leader = await cluster.find_leader()
        term = (await cluster.view(leader.node_id))["current_term"]
        follower = next(n for n in cluster.nodes if n != leader.node_id)
        others = [n for n in cluster.nodes if n != follower]

        await deferToThread(self.proxy.partition, [follower], others)

        async def still_leading():
            return (await cluster.view(leader.node_id))["role"] == "leader"

        await holds_for(still_leading, 5, f"node {leader.node_id} leading", interval=0.2)
        await deferToThread(self.proxy.heal_all)

        async def follower_rejoined():
            views = await cluster.views()
            return views.get(follower, {}).get("leader_id") == leader.node_id

        await wait_for(follower_rejoined, 30, "the follower to rejoin")
        views = await cluster.views()
        self.assertEqual({v["current_term"] for v in views.values()}, {term})
        self.assertEqual({v["leader_id"] for v in views.values()}, {leader.node_id})

    async def test_a_follower_behind_compaction_catches_up_by_snapshot(self):
        cluster = await self.proxied_cluster(3)
        leader = await cluster.find_leader()
        follower_id = next(n for n in cluster.nodes if n != leader.node_id)
        follower = cluster.nodes[follower_id]
        others = [n for n in cluster.nodes if n != follower_id]
        await deferToThread(self.proxy.partition, [follower_id], others)

        acked = await submit_all(leader, 1500, prefix="bulk", concurrency=16)
        self.assertEqual(len(set(acked)), 1500)

        async def compacted():
            return (await cluster.view(leader.node_id))["first_log_index"] > 1

        await wait_for(compacted, 120, "the leader to compact its log")

        await deferToThread(self.proxy.heal_all)

        async def caught_up():
            return await job_table(follower) == await job_table(leader)

        await wait_for(caught_up, 180, "the follower's table to equal the leader's", interval=0.5)
        view = await cluster.view(follower_id)
        self.assertGreater(view["first_log_index"], 1)  # it started from a snapshot
        self.assertLessEqual(set(acked), set(await job_table(follower)))
