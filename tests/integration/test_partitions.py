"""Partitions on real traffic: nodes talk through the fault-injection proxy."""

import time

import grpc
import pytest

from jobsched._proto import scheduler_pb2 as pb
from tests.faultproxy import FaultProxy
from tests.integration.test_cluster import job_table, submit_all
from tests.nodeproc import Cluster, free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(tmp_path):
    proxy = FaultProxy.start(tmp_path)
    try:
        yield proxy
    finally:
        proxy.stop()


def proxied_cluster(nodes, proxy, size, *extra_args):
    ports = {node_id: free_port() for node_id in range(1, size + 1)}
    peers = proxy.cluster_peers(ports)
    cluster = Cluster(nodes, size, *extra_args, peer_ports=peers.__getitem__, grpc_ports=ports)
    return cluster


def roles(cluster, ids):
    views = cluster.cluster_views()
    return {node_id: views[node_id]["role"] for node_id in ids if node_id in views}


def test_five_nodes_split_three_two_only_the_majority_commits(nodes, proxy):
    cluster = proxied_cluster(nodes, proxy, 5)
    old_leader = cluster.leader(timeout=30)
    minority = [old_leader.node_id, next(n for n in cluster.nodes if n != old_leader.node_id)]
    majority = [n for n in cluster.nodes if n not in minority]
    acked_before = submit_all(old_leader, 10, prefix="before")

    proxy.partition(minority, majority)
    new_leader = cluster.leader(timeout=10, among=majority)
    assert new_leader.node_id in majority
    acked_during = submit_all(new_leader, 10, prefix="during")

    wait_until(
        lambda: "leader" not in roles(cluster, minority).values(),
        5,
        "the isolated old leader to step down",
    )
    for node_id in minority:  # within an election timeout of the leader stepping down
        wait_until(
            lambda: cluster.nodes[node_id].get("/health/ready").status == 503,
            2,
            f"node {node_id}'s readiness to turn 503",
        )
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # the minority never elects anyone
        assert "leader" not in roles(cluster, minority).values()
        time.sleep(0.1)
    with pytest.raises(grpc.RpcError):
        old_leader.scheduler.SubmitJob(pb.SubmitJobRequest(command="true"), timeout=6)
    minority_commit = {n: cluster.cluster_views()[n]["commit_index"] for n in minority}

    proxy.heal_all()
    leader = cluster.leader(timeout=15)
    assert leader.node_id in majority  # the minority's logs are behind: it cannot win

    def converged():
        views = cluster.cluster_views()
        marks = {(v["commit_index"], v["log_length"], v["leader_id"]) for v in views.values()}
        return len(views) == 5 and len(marks) == 1

    wait_until(converged, 15, "every log to converge on one leader")
    tables = [job_table(node) for node in cluster.nodes.values()]
    assert all(table == tables[0] for table in tables)
    assert set(acked_before + acked_during) <= set(tables[0])
    assert all(cluster.cluster_views()[n]["commit_index"] > minority_commit[n] for n in minority)


def test_a_follower_cut_off_and_back_does_not_raise_the_term(nodes, proxy):
    cluster = proxied_cluster(nodes, proxy, 3)
    leader = cluster.leader(timeout=30)
    term = leader.get("/api/cluster").body["current_term"]
    follower = next(n for n in cluster.nodes if n != leader.node_id)
    others = [n for n in cluster.nodes if n != follower]

    proxy.partition([follower], others)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert leader.get("/api/cluster").body["role"] == "leader"
        time.sleep(0.2)
    proxy.heal_all()
    wait_until(
        lambda: cluster.cluster_views().get(follower, {}).get("leader_id") == leader.node_id,
        10,
        "the follower to rejoin",
    )
    views = cluster.cluster_views()
    assert {v["current_term"] for v in views.values()} == {term}
    assert {v["leader_id"] for v in views.values()} == {leader.node_id}


def test_a_follower_behind_compaction_catches_up_by_snapshot(nodes, proxy):
    cluster = proxied_cluster(nodes, proxy, 3)
    leader = cluster.leader(timeout=30)
    follower_id = next(n for n in cluster.nodes if n != leader.node_id)
    follower = cluster.nodes[follower_id]
    proxy.partition([follower_id], [n for n in cluster.nodes if n != follower_id])

    acked = submit_all(leader, 1500, prefix="bulk", workers=16)
    assert len(set(acked)) == 1500
    wait_until(
        lambda: leader.get("/api/cluster").body["first_log_index"] > 1,
        60,
        "the leader to compact its log",
    )

    proxy.heal_all()

    def caught_up():
        return job_table(follower) == job_table(leader)

    wait_until(caught_up, 90, "the follower's table to equal the leader's", interval=0.5)
    view = follower.get("/api/cluster").body
    assert view["first_log_index"] > 1  # it started from a snapshot, not from entry 1
    assert set(acked) <= set(job_table(follower))
