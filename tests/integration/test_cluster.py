"""Real multi-node clusters on 127.0.0.1: election, replication, failover, transfer."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import Cluster, http, wait_until

pytestmark = pytest.mark.slow


RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)


def submit_all(node, count, prefix="job", workers=8):
    """Submit `count` jobs concurrently as a careful client does: each with an
    idempotency key, retried (following the leader hint) until acknowledged."""
    channels = {}

    def stub_for(address):
        if address not in channels:
            channels[address] = grpc.insecure_channel(address)
        return pb_grpc.SchedulerServiceStub(channels[address])

    def one(n):
        request = pb.SubmitJobRequest(command=f"echo {prefix}-{n}", idempotency_key=f"{prefix}-{n}")
        stub, deadline = node.scheduler, time.monotonic() + 30
        while True:
            try:
                return stub.SubmitJob(request, timeout=10).job_id
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
                hint = error.details().partition("Try ")[2]
                if hint:
                    stub = stub_for(hint)
                time.sleep(0.1)

    try:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for channel in channels.values():
            channel.close()


def job_table(node):
    return {
        job["id"]: (job["command"], job["status"], job["output"])
        for job in node.get("/api/jobs").body
    }


def full_log(node):
    entries, start = [], 0
    while True:
        reply = node.scheduler.GetRaftLogEntries(
            pb.GetRaftLogEntriesRequest(start_index=start, limit=1000)
        )
        entries += [(e.index, e.term, e.command.SerializeToString()) for e in reply.entries]
        if not reply.entries or reply.entries[-1].index >= reply.last_log_index:
            return reply, entries
        start = reply.entries[-1].index + 1


def test_three_nodes_elect_one_leader_within_two_seconds(nodes):
    cluster = Cluster(nodes, 3)
    cluster.wait_all_live()
    started = time.monotonic()
    leader = cluster.leader(timeout=2)
    assert time.monotonic() - started <= 2
    for node in cluster.nodes.values():
        status = node.scheduler.GetClusterStatus(pb.GetClusterStatusRequest())
        assert status.leader_id == leader.node_id
        assert [n.node_id for n in status.nodes] == [1, 2, 3]
        assert all(n.is_alive for n in status.nodes)
        ready = node.get("/health/ready")
        assert ready.status == 200 and ready.body["leader_id"] == leader.node_id


def test_two_hundred_jobs_replicate_identically(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    ids = submit_all(leader, 200)
    assert len(set(ids)) == 200
    for job_id in ids[-5:]:
        wait_finished(leader, job_id)

    def converged():
        tables = [job_table(node) for node in cluster.nodes.values()]
        finished = all(row[1] == "completed" for row in tables[0].values())
        return finished and all(table == tables[0] for table in tables) and len(tables[0]) == 200

    wait_until(converged, 60, "every node's job table to hold the same 200 finished jobs")
    table = job_table(leader)
    assert {table[job_id][2] for job_id in ids} == {f"job-{n}\n" for n in range(200)}

    leader_reply, leader_log = full_log(leader)
    for node in cluster.nodes.values():
        reply, log = full_log(node)
        assert log == leader_log
        assert reply.commit_index == leader_reply.commit_index

    def applied_everywhere():
        views = cluster.cluster_views()
        return (
            len({(v["commit_index"], v["last_applied"], v["log_length"]) for v in views.values()})
            == 1
        )

    wait_until(applied_everywhere, 10, "every node to apply the same log")

    first_of_term = {}
    for _index, term, command in leader_log:
        first_of_term.setdefault(term, command)
    assert all(command == b"" for command in first_of_term.values())  # a no-op opens each term


def test_killed_leader_is_replaced_and_no_acknowledged_job_is_lost(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    old_term = leader.get("/api/cluster").body["current_term"]
    acked = submit_all(leader, 30)

    leader.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    survivors = [n.node_id for n in cluster.live_nodes()]
    new_leader = cluster.leader(timeout=5, among=survivors)
    assert time.monotonic() - killed_at <= 1.0 + 0.5  # 1 s, plus our own polling slack
    assert new_leader.node_id != leader.node_id
    assert new_leader.get("/api/cluster").body["current_term"] > old_term

    table = job_table(new_leader)
    assert set(acked) <= set(table)
    reply = new_leader.scheduler.SubmitJob(pb.SubmitJobRequest(command="echo after"))
    assert wait_finished(new_leader, reply.job_id).output == "after\n"


def test_five_nodes_survive_two_leaders_killed_in_turn(nodes):
    cluster = Cluster(nodes, 5)
    for _ in range(2):
        leader = cluster.leader(timeout=30)
        submit_all(leader, 5)
        leader.kill(signal.SIGKILL)
    leader = cluster.leader(timeout=10)
    reply = leader.scheduler.SubmitJob(pb.SubmitJobRequest(command="echo still here"))
    assert wait_finished(leader, reply.job_id).output == "still here\n"


def test_a_lone_survivor_never_acknowledges_and_turns_unready(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    survivor = leader
    for node in list(cluster.nodes.values()):
        if node is not survivor:
            node.kill(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(
        lambda: survivor.get("/health/ready").status == 503,
        2,
        "the survivor's readiness to turn 503",
    )
    assert time.monotonic() - killed_at < 1.0
    assert survivor.get("/health/ready").body == {"status": "no_leader", "leader_id": None}
    with pytest.raises(grpc.RpcError) as raised:
        survivor.scheduler.SubmitJob(pb.SubmitJobRequest(command="true"), timeout=10)
    assert raised.value.code() in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_follower_rejects_writes_and_forwards_rest_and_reads(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    with pytest.raises(grpc.RpcError) as raised:
        follower.scheduler.SubmitJob(pb.SubmitJobRequest(command="true"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == f"Not the leader. Try {leader.grpc_address}"
    with pytest.raises(grpc.RpcError) as raised:
        follower.scheduler.CancelJob(
            pb.CancelJobRequest(job_id="6a1b4bd8-7a4e-4b43-9bd7-1c1e5b1c4b6e")
        )
    assert raised.value.details() == f"Not the leader. Try {leader.grpc_address}"

    answer = http("POST", follower.url + "/api/jobs", {"command": "echo via follower"})
    assert answer.status == 200 and answer.body["success"]
    status = wait_finished(follower, answer.body["job_id"])
    assert status.output == "echo via follower\n".replace("echo ", "")
    long_job = http("POST", follower.url + "/api/jobs", {"command": "sleep 30"}).body["job_id"]
    cancelled = http("DELETE", follower.url + f"/api/jobs/{long_job}")
    assert (cancelled.status, cancelled.body) == (200, {"success": True, "error": None})
    again = http("DELETE", follower.url + f"/api/jobs/{long_job}")
    assert (again.status, again.body) == (
        400,
        {"success": False, "error": "job is already cancelled"},
    )

    transfer = follower.scheduler.TransferLeadership(pb.TransferLeadershipRequest())
    assert (transfer.success, transfer.message) == (False, "Not the leader")


@pytest.mark.parametrize("target", ["named", "auto"])
def test_leadership_transfer(nodes, target):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    others = sorted(n for n in cluster.nodes if n != leader.node_id)
    wanted = others[0] if target == "named" else 0
    reply = leader.scheduler.TransferLeadership(
        pb.TransferLeadershipRequest(target_node_id=wanted), timeout=10
    )
    assert reply.success, reply.message
    if wanted:
        assert reply.new_leader_id == wanted
    assert reply.message == f"Leadership transferred to node {reply.new_leader_id}"
    third = next(
        n for n in cluster.nodes.values() if n.node_id not in (leader.node_id, reply.new_leader_id)
    )
    wait_until(
        lambda: third.get("/api/cluster").body["leader_id"] == reply.new_leader_id,
        5,
        "the third node to see the new leader",
    )
    bad = cluster.nodes[reply.new_leader_id].scheduler.TransferLeadership(
        pb.TransferLeadershipRequest(target_node_id=42)
    )
    assert (bad.success, bad.message) == (False, "Unknown target node 42")


@pytest.mark.parametrize("size", [1, 2, 4])
def test_small_and_even_clusters_commit(nodes, size):
    cluster = Cluster(nodes, size)
    leader = cluster.leader(timeout=30)
    ids = submit_all(leader, 10)
    for job_id in ids:
        assert wait_finished(leader, job_id).status == pb.JOB_STATUS_COMPLETED
    if size >= 2:
        # a strict majority is required: with half the nodes gone nothing commits
        for node in cluster.nodes.values():
            if node is not leader and len(cluster.live_nodes()) > size // 2:
                node.kill(signal.SIGKILL)
        with pytest.raises(grpc.RpcError):
            leader.scheduler.SubmitJob(pb.SubmitJobRequest(command="true"), timeout=10)


def test_draining_a_leader_hands_leadership_away_and_takes_no_jobs(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    reply = leader.scheduler.DrainNode(pb.DrainNodeRequest(), timeout=70)
    assert (reply.success, reply.message) == (True, "Node drained successfully")
    survivors = [n for n in cluster.nodes if n != leader.node_id]
    new_leader = cluster.leader(timeout=10, among=survivors)
    wait_until(
        lambda: any(
            n.node_id == leader.node_id and n.draining
            for n in new_leader.scheduler.GetClusterStatus(pb.GetClusterStatusRequest()).nodes
        ),
        10,
        "the new leader to see the drained node's heartbeat",
    )
    ids = submit_all(new_leader, 12, prefix="after-drain")
    executed_by = {wait_finished(new_leader, job_id).executed_by for job_id in ids}
    assert leader.node_id not in executed_by


def test_sigterm_lets_running_jobs_finish_hands_over_and_exits_zero(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    job_id = leader.scheduler.SubmitJob(
        pb.SubmitJobRequest(command="sleep 2; echo graceful")
    ).job_id
    status = wait_status(leader, job_id, pb.JOB_STATUS_RUNNING)
    runner = cluster.nodes[status.assigned_worker]
    assert runner.stop_gracefully() == 0
    survivors = [n for n in cluster.nodes if n != runner.node_id]
    new_leader = cluster.leader(timeout=10, among=survivors)
    finished = wait_finished(new_leader, job_id)
    assert (finished.status, finished.output) == (pb.JOB_STATUS_COMPLETED, "graceful\n")


def test_a_leader_stopped_with_sigterm_hands_leadership_over(nodes):
    cluster = Cluster(nodes, 3)
    leader = cluster.leader(timeout=30)
    term = leader.get("/api/cluster").body["current_term"]
    assert leader.stop_gracefully() == 0
    assert "Leadership transferred to node" in leader.log_text()
    survivors = [n for n in cluster.nodes if n != leader.node_id]
    new_leader = cluster.leader(timeout=5, among=survivors)
    assert new_leader.get("/api/cluster").body["current_term"] == term + 1
