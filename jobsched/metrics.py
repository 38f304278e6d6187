"""NodeMetrics: one node's Prometheus instruments, in a registry of its own.

Each node (and each node a test builds in one process) has its own
`CollectorRegistry`, never prometheus_client's global one. The parts that observe
something (Raft, the worker, the gRPC servicers) are handed this object; figures read
from the node's state at scrape time (terms, indexes, job counts, slots) come from a
collector the REST adapter registers (jobsched.api.metrics). docs/operations.md lists
every metric.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
"""Seconds, for things that take about a Raft round trip."""

JOB_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds, for a job's time in the queue and its run."""


class NodeMetrics:
    """The instruments of one node; `registry` is what GET /metrics renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.commit_seconds = Histogram(
            "jobsched_raft_commit_seconds",
            "Leader: from proposing an entry until it is committed and applied here",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.apply_lag_seconds = Histogram(
            "jobsched_raft_apply_lag_seconds",
            "From an entry reaching this node's log until this node applies it "
            "(once per batch applied together, for its oldest entry)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "jobsched_raft_snapshot_seconds",
            "From beginning a compaction's snapshot until it was complete (built a "
            "slice per reactor turn while entries apply)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.job_queue_wait_seconds = Histogram(
            "jobsched_job_queue_wait_seconds",
            "Jobs this node's worker started: from submission until the start",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.job_run_seconds = Histogram(
            "jobsched_job_run_seconds",
            "Jobs this node's worker ran: from the start until the end of the run",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.proposals = Counter(
            "jobsched_raft_proposals",
            "Entries this node proposed as leader",
            registry=registry,
        )
        self.proposals_refused = Counter(
            "jobsched_raft_proposals_refused",
            "Proposals refused at once (not the leader, overloaded, stopped)",
            ["reason"],
            registry=registry,
        )
        self.entries_appended = Counter(
            "jobsched_raft_entries_appended",
            "Log entries written to this node's log",
            registry=registry,
        )
        self.entries_applied = Counter(
            "jobsched_raft_entries_applied",
            "Committed log entries this node applied",
            registry=registry,
        )
        self.elections = Counter(
            "jobsched_raft_elections",
            "Elections this node started as a candidate (pre-votes not counted)",
            registry=registry,
        )
        self.raft_send_failures = Counter(
            "jobsched_raft_send_failures",
            "Raft requests to peers that got no answer",
            ["peer"],
            registry=registry,
        )
        self.appends_received = Counter(
            "jobsched_raft_appends_received",
            "AppendEntries requests this node answered, by how they came: "
            "peer_port, grpc_stream or grpc_call",
            ["via"],
            registry=registry,
        )
        self.results_received = Counter(
            "jobsched_results_received",
            "Deliveries of followers' worker results this node took as leader, by how "
            "they came: peer_port or grpc",
            ["via"],
            registry=registry,
        )
        self.rpc_errors = Counter(
            "jobsched_grpc_errors",
            "gRPC calls this node answered with an error, by method and jobsched code",
            ["method", "code"],
            registry=registry,
        )
