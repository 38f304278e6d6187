"""GET /metrics: this node's figures in the Prometheus text format."""

from __future__ import annotations

from jobsched.interfaces import IClusterAPI


def render_metrics(api: IClusterAPI, storage, streams=None) -> bytes:
    """Raft indexes, job counts, (for durable storage) commit counters and (with the gRPC
    server's StreamLimits) its server streams."""
    status = api.raft_status()
    samples: list[tuple[str, str, float]] = [
        ("jobsched_raft_term", "", status.current_term),
        ("jobsched_raft_commit_index", "", status.commit_index),
        ("jobsched_raft_last_applied", "", status.last_applied),
        ("jobsched_raft_last_log_index", "", status.last_log_index),
        ("jobsched_raft_first_log_index", "", status.first_log_index),
        ("jobsched_raft_is_leader", "", int(status.role == "leader")),
        ("jobsched_node_draining", "", int(api.draining)),
    ]
    samples += [
        ("jobsched_jobs", f'status="{job_status.label}"', count)
        for job_status, count in api.job_counts().items()
    ]
    for attribute in ("commit_count", "entries_written"):
        if hasattr(storage, attribute):
            name = f"jobsched_storage_{attribute.replace('_count', 's')}_total"
            samples.append((name, "", getattr(storage, attribute)))
    if streams is not None:
        samples += [
            ("jobsched_grpc_streams_open", "", streams.open),
            ("jobsched_grpc_stream_writes_waiting", "", streams.writes_waiting),
            ("jobsched_grpc_streams_refused_total", "", streams.refused),
            ("jobsched_grpc_streams_dropped_total", "", streams.dropped),
            ("jobsched_grpc_stream_messages_total", "", streams.sent),
        ]
    lines = [
        f"{name}{{{labels}}} {value}" if labels else f"{name} {value}"
        for name, labels, value in samples
    ]
    return ("\n".join(lines) + "\n").encode()
