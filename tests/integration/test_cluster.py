"""Real multi-node clusters on 127.0.0.1: election, replication, failover, transfer."""

import time

import grpc
from twisted.internet import defer, reactor
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.net.channels import Wire
from jobsched.net.outbound import CallFailed, call_deferred
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import Cluster, Node, NodeFactory, metric_samples, pause, wait_for

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)


async def submit_all(node: Node, count: int, prefix: str = "job", concurrency: int = 8) -> list:
    """Submit `count` jobs, `concurrency` at a time, as a careful client does: each with
    an idempotency key, retried (following the leader hint) until acknowledged."""
    channels = {}

    def stub_for(address: str) -> pb_grpc.SchedulerServiceStub:
        if address not in channels:
            channels[address] = Wire().open_channel(address)
        return pb_grpc.SchedulerServiceStub(channels[address])

    async def one(n: int) -> str:
        request = pb.SubmitJobRequest(command=f"echo {prefix}-{n}", idempotency_key=f"{prefix}-{n}")
        stub, deadline = None, time.monotonic() + 60
        while True:
            try:
                if stub is None:
                    reply = await node.call("SubmitJob", request, timeout=10)
                else:
                    reply = await call_deferred(reactor, stub.SubmitJob, request, 10)
                return reply.job_id
            except CallFailed as error:
                if error.code not in RETRYABLE or time.monotonic() > deadline:
                    raise
                if error.leader_address:  # the NOT_LEADER hint, sent as metadata
                    stub = stub_for(error.leader_address)
                await pause(0.1)

    semaphore = defer.DeferredSemaphore(concurrency)
    try:
        outcomes = await defer.DeferredList(
            [semaphore.run(lambda n=n: defer.ensureDeferred(one(n))) for n in range(count)],
            consumeErrors=True,
        )
    finally:
        for channel in channels.values():
            channel.close()
    for ok, outcome in outcomes:
        if not ok:
            outcome.raiseException()
    return [job_id for _ok, job_id in outcomes]


async def job_table(node: Node) -> dict:
    """{job id: (command, status, output)} of every job the node knows."""
    answer = await node.rest("GET", "/api/jobs")
    return {job["id"]: (job["command"], job["status"], job["output"]) for job in answer.body}


async def full_log(node: Node) -> tuple:
    """The node's last GetRaftLogEntries reply and every (index, term, command) entry."""
    entries, start = [], 0
    while True:
        reply = await node.call(
            "GetRaftLogEntries", pb.GetRaftLogEntriesRequest(start_index=start, limit=1000)
        )
        entries += [(e.index, e.term, e.command.SerializeToString()) for e in reply.entries]
        if not reply.entries or reply.entries[-1].index >= reply.last_log_index:
            return reply, entries
        start = reply.entries[-1].index + 1


class ClusterTestCase(unittest.TestCase):
    """Each test starts a cluster of its own (process executor); every node is killed
    by PID in the test's cleanup."""

    timeout = 300

    def start_cluster(self, size: int, *extra_args: str) -> Cluster:
        return Cluster(NodeFactory.for_test(self), size, *extra_args)

    async def assertSubmitFails(self, node: Node) -> CallFailed:
        with self.assertRaises(CallFailed) as caught:
            await node.call("SubmitJob", pb.SubmitJobRequest(command="true"), timeout=10)
        return caught.exception


class ElectionTests(ClusterTestCase):
    async def test_three_nodes_elect_one_leader(self):
        cluster = self.start_cluster(3)
        await cluster.until_all_live()
        leader = await cluster.find_leader(timeout=30)
        for node in cluster.nodes.values():
            status = await node.call("GetClusterStatus", pb.GetClusterStatusRequest())
            self.assertEqual(status.leader_id, leader.node_id)
            self.assertEqual([n.node_id for n in status.nodes], [1, 2, 3])
            self.assertTrue(all(n.is_alive for n in status.nodes))
            ready = await node.rest("GET", "/health/ready")
            self.assertEqual((ready.status, ready.body["leader_id"]), (200, leader.node_id))
        term = (await leader.rest("GET", "/api/cluster")).body["current_term"]
        self.assertIn(f"Elected leader for term {term}", leader.log_text())
        for node in cluster.nodes.values():
            if node is not leader:
                self.assertIn(
                    f"Following node {leader.node_id}, leader for term {term}", node.log_text()
                )

    async def check_cluster_of_size_commits(self, size: int) -> None:
        cluster = self.start_cluster(size)
        leader = await cluster.find_leader()
        ids = await submit_all(leader, 10)
        for job_id in ids:
            self.assertEqual((await wait_finished(leader, job_id)).status, pb.JOB_STATUS_COMPLETED)
        if size >= 2:
            # a strict majority is required: with half the nodes gone nothing commits
            for node in cluster.nodes.values():
                if node is not leader and len(cluster.live_nodes()) > size // 2:
                    node.kill()
            await self.assertSubmitFails(leader)

    async def test_a_single_node_cluster_commits(self):
        await self.check_cluster_of_size_commits(1)

    async def test_a_two_node_cluster_commits_and_needs_both(self):
        await self.check_cluster_of_size_commits(2)

    async def test_a_four_node_cluster_commits_and_needs_three(self):
        await self.check_cluster_of_size_commits(4)


class ReplicationTests(ClusterTestCase):
    async def test_two_hundred_jobs_replicate_identically(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        ids = await submit_all(leader, 200)
        self.assertEqual(len(set(ids)), 200)
        for job_id in ids[-5:]:
            await wait_finished(leader, job_id)

        async def converged():
            tables = [await job_table(node) for node in cluster.nodes.values()]
            finished = all(row[1] == "completed" for row in tables[0].values())
            same = all(table == tables[0] for table in tables)
            return finished and same and len(tables[0]) == 200

        await wait_for(converged, 120, "every node's job table to hold the same 200 finished jobs")
        table = await job_table(leader)
        self.assertEqual({table[job_id][2] for job_id in ids}, {f"job-{n}\n" for n in range(200)})

        leader_reply, leader_log = await full_log(leader)
        for node in cluster.nodes.values():
            reply, log = await full_log(node)
            self.assertEqual(log, leader_log)
            self.assertEqual(reply.commit_index, leader_reply.commit_index)

        async def applied_everywhere():
            views = await cluster.views()
            marks = {
                (v["commit_index"], v["last_applied"], v["log_length"]) for v in views.values()
            }
            return len(views) == 3 and len(marks) == 1

        await wait_for(applied_everywhere, 30, "every node to apply the same log")

        first_of_term = {}
        for _index, term, command in leader_log:
            first_of_term.setdefault(term, command)
        # a no-op opens each term
        self.assertTrue(all(command == b"" for command in first_of_term.values()))

    async def counted_by_way(self, node: Node, counter: str) -> dict[str, float]:
        samples = metric_samples((await node.rest("GET", "/metrics")).body)
        prefix = counter + "{via="
        return {
            name[len(prefix) + 1 : -2]: value
            for name, value in samples.items()
            if name.startswith(prefix)
        }

    async def check_the_log_and_results_go_via(self, via: str, results_via: str, *args: str):
        cluster = self.start_cluster(3, *args)
        leader = await cluster.find_leader()
        ran_on = []
        for job_id in await submit_all(leader, 30):
            finished = await wait_finished(leader, job_id)
            self.assertEqual(finished.status, pb.JOB_STATUS_COMPLETED)
            ran_on.append(finished.executed_by)
        for node in cluster.nodes.values():
            if node is not leader:
                received = await self.counted_by_way(node, "jobsched_raft_appends_received_total")
                # a leader's first AppendEntries to each follower goes on gRPC
                self.assertGreaterEqual(received.get(via, 0), 5, received)
                self.assertLessEqual(sum(received.values()) - received[via], 3, received)
        self.assertNotEqual(set(ran_on), {leader.node_id}, "every job ran on the leader")
        taken = await self.counted_by_way(leader, "jobsched_results_received_total")
        self.assertGreaterEqual(taken.get(results_via, 0), 1, taken)
        # a result may go on gRPC while a new leader's first AppendEntries opens the way
        self.assertLessEqual(sum(taken.values()) - taken[results_via], 2, taken)

    async def test_followers_get_their_entries_and_send_results_on_the_peer_port(self):
        await self.check_the_log_and_results_go_via("peer_port", "peer_port")

    async def test_with_the_peer_port_off_entries_go_on_a_grpc_stream_results_in_calls(self):
        await self.check_the_log_and_results_go_via("grpc_stream", "grpc", "--peer-port", "off")


class FailoverTests(ClusterTestCase):
    async def test_killed_leader_is_replaced_and_no_acknowledged_job_is_lost(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        old_term = (await leader.rest("GET", "/api/cluster")).body["current_term"]
        acked = await submit_all(leader, 30)

        leader.kill()
        survivors = [n.node_id for n in cluster.live_nodes()]
        new_leader = await cluster.find_leader(timeout=30, among=survivors)
        self.assertNotEqual(new_leader.node_id, leader.node_id)
        new_term = (await new_leader.rest("GET", "/api/cluster")).body["current_term"]
        self.assertGreater(new_term, old_term)
        # The followers saw its connection close: they did not wait for their own timeouts.
        said = f"Leader {leader.node_id} disconnected; standing for election unless it speaks again"
        said_times = [node.log_text().count(said) for node in cluster.live_nodes()]
        self.assertEqual(max(said_times), 1, said_times)

        self.assertLessEqual(set(acked), set(await job_table(new_leader)))
        reply = await new_leader.call("SubmitJob", pb.SubmitJobRequest(command="echo after"))
        self.assertEqual((await wait_finished(new_leader, reply.job_id)).output, "after\n")

    async def test_five_nodes_survive_two_leaders_killed_in_turn(self):
        cluster = self.start_cluster(5)
        for _ in range(2):
            leader = await cluster.find_leader()
            await submit_all(leader, 5)
            leader.kill()
        leader = await cluster.find_leader()
        reply = await leader.call("SubmitJob", pb.SubmitJobRequest(command="echo still here"))
        self.assertEqual((await wait_finished(leader, reply.job_id)).output, "still here\n")

    async def test_a_lone_survivor_never_acknowledges_and_turns_unready(self):
        cluster = self.start_cluster(3)
        survivor = await cluster.find_leader()
        for node in list(cluster.nodes.values()):
            if node is not survivor:
                node.kill()
        await wait_for(
            lambda: survivor.answers(503, "/health/ready"),
            30,
            "the survivor's readiness to turn 503",
        )
        ready = await survivor.rest("GET", "/health/ready")
        self.assertEqual(ready.body, {"status": "no_leader", "leader_id": None})
        failed = await self.assertSubmitFails(survivor)
        self.assertIn(
            failed.code,
            (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.FAILED_PRECONDITION,
            ),
        )

    async def test_follower_rejects_writes_and_forwards_rest_and_reads(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        not_leader = f"Not the leader. Try {leader.grpc_address}"
        with self.assertRaises(CallFailed) as caught:
            await follower.call("SubmitJob", pb.SubmitJobRequest(command="true"))
        self.assertEqual(
            (caught.exception.code, caught.exception.details),
            (grpc.StatusCode.FAILED_PRECONDITION, not_leader),
        )
        with self.assertRaises(CallFailed) as caught:
            await follower.call(
                "CancelJob", pb.CancelJobRequest(job_id="6a1b4bd8-7a4e-4b43-9bd7-1c1e5b1c4b6e")
            )
        self.assertEqual(caught.exception.details, not_leader)

        answer = await follower.rest("POST", "/api/jobs", {"command": "echo via follower"})
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.body["success"])
        status = await wait_finished(follower, answer.body["job_id"])
        self.assertEqual(status.output, "via follower\n")
        submitted = await follower.rest("POST", "/api/jobs", {"command": "sleep 30"})
        long_job = submitted.body["job_id"]
        cancelled = await follower.rest("DELETE", f"/api/jobs/{long_job}")
        self.assertEqual(
            (cancelled.status, cancelled.body), (200, {"success": True, "error": None})
        )
        again = await follower.rest("DELETE", f"/api/jobs/{long_job}")
        self.assertEqual(
            (again.status, again.body),
            (
                400,
                {"success": False, "error": "job is already cancelled", "code": "ALREADY_TERMINAL"},
            ),
        )

        transfer = await follower.call("TransferLeadership", pb.TransferLeadershipRequest())
        self.assertEqual((transfer.success, transfer.message), (False, "Not the leader"))

    async def test_a_follower_checks_and_forwards_every_rest_submit_field(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        refused = await follower.rest("POST", "/api/jobs", {"command": "true", "max_attempts": 11})
        self.assertEqual(
            (refused.status, refused.body["error"], refused.body["code"]),
            (400, "max_attempts must be from 1 to 10", "INVALID_ARGUMENT"),
        )
        body = {
            "command": "echo fields",
            "timeout_seconds": 7,
            "idempotency_key": "fields-1",
            "max_attempts": 1,
        }
        answer = await follower.rest("POST", "/api/jobs", body)
        self.assertEqual(answer.status, 200, answer.body)
        _reply, _entries = await full_log(leader)
        log = await leader.call("GetRaftLogEntries", pb.GetRaftLogEntriesRequest(limit=1000))
        [submitted] = [
            e.command.submit_job
            for e in log.entries
            if e.command.submit_job.job_id == answer.body["job_id"]
        ]
        self.assertEqual(
            (submitted.timeout_seconds, submitted.idempotency_key, submitted.max_attempts),
            (7, "fields-1", 1),
        )

    async def test_a_batch_is_one_entry_and_a_follower_forwards_rest_batches(self):
        cluster = self.start_cluster(3)
        leader = await cluster.batching_leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        with self.assertRaises(CallFailed) as caught:
            await follower.call(
                "SubmitJobs", pb.SubmitJobsRequest(jobs=[pb.SubmitJobRequest(command="true")])
            )
        self.assertEqual(caught.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
        before = (
            await leader.call("GetRaftLogEntries", pb.GetRaftLogEntriesRequest())
        ).last_log_index
        reply = await leader.call(
            "SubmitJobs",
            pb.SubmitJobsRequest(
                jobs=[pb.SubmitJobRequest(command=f"echo grpc {n}") for n in range(3)]
            ),
        )
        log = await leader.call(
            "GetRaftLogEntries", pb.GetRaftLogEntriesRequest(start_index=before + 1)
        )
        batches = [e.command.submit_jobs for e in log.entries if e.command.HasField("submit_jobs")]
        self.assertEqual(
            [[job.job_id for job in batch.jobs] for batch in batches],
            [[job.job_id for job in reply.jobs]],
        )
        refused = await follower.rest(
            "POST", "/api/jobs/batch", {"jobs": [{"command": "true"}, {"command": " "}]}
        )
        self.assertEqual(
            (refused.status, refused.body["error"], refused.body["code"]),
            (400, "job 1: Command cannot be empty", "INVALID_ARGUMENT"),
        )
        answer = await follower.rest(
            "POST", "/api/jobs/batch", {"jobs": [{"command": f"echo rest {n}"} for n in range(3)]}
        )
        self.assertEqual(answer.status, 200, answer.body)
        job_ids = [job["job_id"] for job in answer.body["jobs"]]
        outputs = [(await wait_finished(follower, job_id)).output for job_id in job_ids]
        self.assertEqual(outputs, [f"rest {n}\n" for n in range(3)])

    async def test_no_hint_ever_names_a_dead_leader(self):
        """Right after the leader dies, a follower's 503 names no leader, or the new one."""
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        leader.kill()
        hints = []
        while len(hints) < 30:
            answer = await follower.rest("POST", "/api/jobs", {"command": "true"})
            if answer.status == 200:
                break
            hints.append(answer.body.get("leader_hint"))
            await pause(0.02)
        self.assertNotIn(leader.grpc_address, hints)


class LeadershipHandOverTests(ClusterTestCase):
    async def check_leadership_transfer(self, named: bool) -> None:
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        others = sorted(n for n in cluster.nodes if n != leader.node_id)
        wanted = others[0] if named else 0
        reply = await leader.call(
            "TransferLeadership", pb.TransferLeadershipRequest(target_node_id=wanted), timeout=10
        )
        self.assertTrue(reply.success, reply.message)
        if wanted:
            self.assertEqual(reply.new_leader_id, wanted)
        self.assertEqual(reply.message, f"Leadership transferred to node {reply.new_leader_id}")
        third = next(
            n
            for n in cluster.nodes.values()
            if n.node_id not in (leader.node_id, reply.new_leader_id)
        )

        async def third_sees_new_leader():
            view = (await third.rest("GET", "/api/cluster")).body
            return view["leader_id"] == reply.new_leader_id

        await wait_for(third_sees_new_leader, 30, "the third node to see the new leader")
        bad = await cluster.nodes[reply.new_leader_id].call(
            "TransferLeadership", pb.TransferLeadershipRequest(target_node_id=42)
        )
        self.assertEqual((bad.success, bad.message), (False, "Unknown target node 42"))

    async def test_leadership_transfer_to_a_named_node(self):
        await self.check_leadership_transfer(named=True)

    async def test_leadership_transfer_to_a_node_the_leader_picks(self):
        await self.check_leadership_transfer(named=False)

    async def test_draining_a_leader_hands_leadership_away_and_takes_no_jobs(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        reply = await leader.call("DrainNode", pb.DrainNodeRequest(), timeout=70)
        self.assertEqual((reply.success, reply.message), (True, "Node drained successfully"))
        survivors = [n for n in cluster.nodes if n != leader.node_id]
        new_leader = await cluster.find_leader(among=survivors)

        async def drained_node_seen():
            status = await new_leader.call("GetClusterStatus", pb.GetClusterStatusRequest())
            return any(n.node_id == leader.node_id and n.draining for n in status.nodes)

        await wait_for(drained_node_seen, 30, "the new leader to see the drained node's heartbeat")
        ids = await submit_all(new_leader, 12, prefix="after-drain")
        executed_by = {(await wait_finished(new_leader, job_id)).executed_by for job_id in ids}
        self.assertNotIn(leader.node_id, executed_by)

    async def test_sigterm_lets_running_jobs_finish_hands_over_and_exits_zero(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        reply = await leader.call(
            "SubmitJob", pb.SubmitJobRequest(command="sleep 2; echo graceful")
        )
        status = await wait_status(leader, reply.job_id, pb.JOB_STATUS_RUNNING)
        runner = cluster.nodes[status.assigned_worker]
        self.assertEqual(await runner.stop(), 0)
        survivors = [n for n in cluster.nodes if n != runner.node_id]
        new_leader = await cluster.find_leader(among=survivors)
        finished = await wait_finished(new_leader, reply.job_id)
        self.assertEqual(
            (finished.status, finished.output), (pb.JOB_STATUS_COMPLETED, "graceful\n")
        )

    async def test_a_leader_stopped_with_sigterm_hands_leadership_over(self):
        cluster = self.start_cluster(3)
        leader = await cluster.find_leader()
        term = (await leader.rest("GET", "/api/cluster")).body["current_term"]
        self.assertEqual(await leader.stop(), 0)
        self.assertIn("Leadership transferred to node", leader.log_text())
        survivors = [n for n in cluster.nodes if n != leader.node_id]
        new_leader = await cluster.find_leader(timeout=30, among=survivors)
        view = (await new_leader.rest("GET", "/api/cluster")).body
        self.assertEqual(view["current_term"], term + 1)
