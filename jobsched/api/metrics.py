"""GET /metrics: this node's figures in the Prometheus text format (prometheus_client).

The node's NodeMetrics registry holds what is observed as it happens (histograms and
counters); `StateCollector`, registered in the same registry, reads the rest from the
node's state at scrape time: Raft indexes, job counts, worker slots, durable-storage
counters and the gRPC server's streams.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from jobsched.interfaces import IClusterAPI
from jobsched.jobs.model import JobStatus
from jobsched.metrics import NodeMetrics

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()
"""The text format generate_latest writes (names escaped with underscores)."""


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class StateCollector:
    """Figures read from the node's state whenever /metrics is scraped."""

    def __init__(self, api: IClusterAPI, worker=None, storage=None, streams=None) -> None:
        self._api = api
        self._worker = worker
        self._storage = storage
        self._streams = streams

    def describe(self):
        return []  # names depend on the storage and streams present: collected only

    def collect(self):
        status = self._api.raft_status()
        yield _gauge("jobsched_raft_term", "Current Raft term", status.current_term)
        yield _gauge("jobsched_raft_commit_index", "Highest committed index", status.commit_index)
        yield _gauge("jobsched_raft_last_applied", "Highest applied index", status.last_applied)
        yield _gauge("jobsched_raft_last_log_index", "Last log index", status.last_log_index)
        yield _gauge(
            "jobsched_raft_first_log_index", "First index still in the log", status.first_log_index
        )
        yield _gauge("jobsched_raft_is_leader", "1 on the leader", int(status.role == "leader"))
        yield _gauge("jobsched_node_draining", "1 while this node drains", int(self._api.draining))
        counts = self._api.job_counts()
        jobs = GaugeMetricFamily("jobsched_jobs", "Jobs in the table by status", labels=["status"])
        for job_status, count in counts.items():
            jobs.add_metric([job_status.label], count)
        yield jobs
        pending = counts[JobStatus.PENDING]
        yield _gauge("jobsched_job_queue_depth", "Pending jobs (waiting for a slot)", pending)
        if self._worker is not None:
            slots = self._worker.slots
            yield _gauge("jobsched_worker_slots", "Jobs this node's worker runs at once", slots)
            yield _gauge(
                "jobsched_worker_slots_in_use",
                "Slots of this node's worker held by a run or an undelivered result",
                slots - self._worker.free_slots(),
            )
        yield from self._storage_families()
        yield from self._stream_families()

    def _storage_families(self):
        storage = self._storage
        if hasattr(storage, "commit_count"):
            yield _counter(
                "jobsched_storage_commits", "Durable-storage commits (fsyncs)", storage.commit_count
            )
        if hasattr(storage, "entries_written"):
            yield _counter(
                "jobsched_storage_entries_written",
                "Log entries written to durable storage",
                storage.entries_written,
            )
        if hasattr(storage, "snapshots_written"):
            yield _counter(
                "jobsched_storage_snapshots_written",
                "Snapshots written to durable storage (a compaction's only every few)",
                storage.snapshots_written,
            )

    def _stream_families(self):
        streams = self._streams
        if streams is None:
            return
        yield _gauge("jobsched_grpc_streams_open", "Open server streams", streams.open)
        yield _gauge(
            "jobsched_grpc_stream_writes_waiting",
            "Server streams waiting for their reader",
            streams.writes_waiting,
        )
        yield _counter(
            "jobsched_grpc_streams_refused", "Streams refused at the limit", streams.refused
        )
        yield _counter(
            "jobsched_grpc_streams_dropped", "Streams dropped for a stalled reader", streams.dropped
        )
        yield _counter("jobsched_grpc_stream_messages", "Stream messages sent", streams.sent)


def render_metrics(metrics: NodeMetrics) -> bytes:
    """The node's registry in the Prometheus text format."""
    return generate_latest(metrics.registry)
