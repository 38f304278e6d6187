"""/metrics: per-node registries, what Raft and the worker observe, the names tests and
docs rely on, and promtool's verdict on the text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from jobsched.api.metrics import StateCollector, render_metrics
from jobsched.errors import NotLeader
from jobsched.jobs.model import JobStatus
from jobsched.metrics import NodeMetrics
from jobsched.raft.core import RaftLimits
from jobsched.raft.service import RaftStatus
from jobsched.worker.service import WorkerService
from tests.promtool import check_metrics
from tests.unit.test_raft_service import Cluster, command
from tests.unit.test_worker_service import INCARNATION, NODE, Harness, result


def samples(metrics: NodeMetrics) -> dict[str, float]:
    """{name{labels}: value} of every sample the node's /metrics would show."""
    found = {}
    for family in text_string_to_metric_families(render_metrics(metrics).decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


class FakeApi:
    draining = False

    def raft_status(self) -> RaftStatus:
        return RaftStatus(1, "leader", 4, 1, "127.0.0.1:1", 10, 10, 11, 1, True)

    def job_counts(self) -> dict:
        return {status: int(status) for status in JobStatus}


class FakeWorker:
    slots = 4

    def free_slots(self) -> int:
        return 1


class FakeStorage:
    commit_count = 7
    entries_written = 9
    snapshots_written = 1


class FakeStreams:
    open = 2
    writes_waiting = 1
    refused = 3
    dropped = 0
    sent = 50


def full_metrics() -> NodeMetrics:
    """A node's metrics with every collector present and every instrument used once."""
    metrics = NodeMetrics()
    metrics.registry.register(StateCollector(FakeApi(), FakeWorker(), FakeStorage(), FakeStreams()))
    metrics.commit_seconds.observe(0.003)
    metrics.apply_lag_seconds.observe(0.001)
    metrics.snapshot_seconds.observe(0.05)
    metrics.job_queue_wait_seconds.observe(0.02)
    metrics.job_run_seconds.observe(1.5)
    metrics.proposals.inc()
    metrics.proposals_refused.labels("NOT_LEADER").inc()
    metrics.entries_appended.inc(2)
    metrics.entries_applied.inc(2)
    metrics.elections.inc()
    metrics.raft_send_failures.labels("2").inc()
    metrics.rpc_errors.labels("SubmitJob", "INVALID_ARGUMENT").inc()
    return metrics


class StateCollectorTests(unittest.TestCase):
    def test_existing_names_keep_their_values(self):
        found = samples(full_metrics())
        self.assertEqual(found["jobsched_raft_term"], 4)
        self.assertEqual(found["jobsched_raft_commit_index"], 10)
        self.assertEqual(found["jobsched_raft_last_applied"], 10)
        self.assertEqual(found["jobsched_raft_last_log_index"], 11)
        self.assertEqual(found["jobsched_raft_first_log_index"], 1)
        self.assertEqual(found["jobsched_raft_is_leader"], 1)
        self.assertEqual(found["jobsched_node_draining"], 0)
        self.assertEqual(found['jobsched_jobs{status="running"}'], int(JobStatus.RUNNING))
        self.assertEqual(found["jobsched_storage_commits_total"], 7)
        self.assertEqual(found["jobsched_storage_entries_written_total"], 9)
        self.assertEqual(found["jobsched_storage_snapshots_written_total"], 1)
        self.assertEqual(found["jobsched_grpc_streams_open"], 2)
        self.assertEqual(found["jobsched_grpc_stream_writes_waiting"], 1)
        self.assertEqual(found["jobsched_grpc_streams_refused_total"], 3)
        self.assertEqual(found["jobsched_grpc_streams_dropped_total"], 0)
        self.assertEqual(found["jobsched_grpc_stream_messages_total"], 50)

    def test_queue_depth_and_slots(self):
        found = samples(full_metrics())
        self.assertEqual(found["jobsched_job_queue_depth"], int(JobStatus.PENDING))
        self.assertEqual(found["jobsched_worker_slots"], 4)
        self.assertEqual(found["jobsched_worker_slots_in_use"], 3)

    def test_memory_storage_and_no_streams_leave_their_names_out(self):
        metrics = NodeMetrics()
        metrics.registry.register(StateCollector(FakeApi(), storage=object()))
        found = samples(metrics)
        self.assertIn("jobsched_raft_term", found)
        self.assertFalse([name for name in found if "storage" in name or "stream" in name])

    def test_promtool_accepts_the_text(self):
        status, output = check_metrics(render_metrics(full_metrics()))
        self.assertEqual((status, output), (0, ""))


class RegistryPerNodeTests(unittest.TestCase):
    """Three Raft nodes in one process each count into their own registry."""

    def test_raft_observations_land_in_each_nodes_own_registry(self):
        cluster = Cluster(3)
        leader = cluster.leader()
        followers = [n for n in cluster.nodes.values() if n is not leader]
        for n in range(5):
            leader.propose(command(n))
        last = leader.status().last_log_index
        cluster.run_until(lambda: all(n.status().last_applied == last for n in followers))
        on_leader = samples(leader.metrics)
        self.assertEqual(on_leader["jobsched_raft_proposals_total"], 5)
        self.assertEqual(on_leader["jobsched_raft_commit_seconds_count"], 5)
        self.assertGreater(on_leader["jobsched_raft_commit_seconds_sum"], 0)
        self.assertGreaterEqual(on_leader["jobsched_raft_elections_total"], 1)
        for follower in followers:
            found = samples(follower.metrics)
            self.assertEqual(found["jobsched_raft_proposals_total"], 0)
            self.assertEqual(found["jobsched_raft_commit_seconds_count"], 0)
            # the no-op and the five proposals reached each follower's log and applied
            self.assertEqual(found["jobsched_raft_entries_appended_total"], 6)
            self.assertGreaterEqual(found["jobsched_raft_apply_lag_seconds_count"], 1)
            self.assertEqual(found["jobsched_raft_entries_applied_total"], 6)

    def test_every_node_times_its_compactions_snapshots(self):
        cluster = Cluster(3, limits=RaftLimits(compaction_threshold=20))
        leader = cluster.leader()
        for n in range(25):
            leader.propose(command(n))
        cluster.run_until(
            lambda: all(n.status().first_log_index > 1 for n in cluster.nodes.values())
        )
        for node in cluster.nodes.values():
            self.assertEqual(samples(node.metrics)["jobsched_raft_snapshot_seconds_count"], 1)

    def test_refused_proposals_are_counted_by_reason(self):
        cluster = Cluster(3)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        self.failureResultOf(follower.propose(command(1)), NotLeader)
        found = samples(follower.metrics)
        self.assertEqual(found['jobsched_raft_proposals_refused_total{reason="NOT_LEADER"}'], 1)

    def test_lost_requests_are_counted_per_peer(self):
        cluster = Cluster(3)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        cluster.network.isolate(follower.node_id)
        cluster.run(0.5)
        found = samples(leader.metrics)
        self.assertGreater(
            found[f'jobsched_raft_send_failures_total{{peer="{follower.node_id}"}}'], 0
        )


class WorkerObservationTests(unittest.TestCase):
    """The worker observes each job it runs: time in the queue, time running."""

    def test_queue_wait_and_run_time_of_a_job_run_here(self):
        metrics = NodeMetrics()
        h = Harness(start=False)
        h.worker = WorkerService(
            NODE, h.table, h.executor, h.reporter, 2, h.clock, INCARNATION, metrics=metrics
        )
        h.worker.startService()
        h.submit("a")  # created at 1,000 ms
        h.clock.advance(3.5)
        h.assign("a")
        h.settle()
        h.executor.runs["a"].callback(result())  # ran from 5,000 to 6,000 ms
        found = samples(metrics)
        self.assertEqual(found["jobsched_job_queue_wait_seconds_count"], 1)
        self.assertAlmostEqual(found["jobsched_job_queue_wait_seconds_sum"], 2.5)
        self.assertEqual(found["jobsched_job_run_seconds_count"], 1)
        self.assertAlmostEqual(found["jobsched_job_run_seconds_sum"], 1.0)
