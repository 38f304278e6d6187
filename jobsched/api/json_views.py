"""The JSON shapes of REST answers (API.md §3)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from jobsched.app import ClusterView, LogView
from jobsched.jobs.model import Job


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def job_json_bytes(job: Job) -> bytes:
    """`job_json` as the REST API writes it (json.dumps, UTF-8)."""
    return json.dumps(job_json(job)).encode("utf-8")


def job_json(job: Job) -> dict:
    """The REST job object of API.md 3.2 (ext keys included)."""
    finished = job.status.is_terminal
    return {
        "id": job.job_id,
        "command": job.command,
        "status": job.status.label,
        "executed_by": job.executed_by or None,
        "output": job.output if finished else None,
        "error": job.error or None,
        "created_at": rfc3339(job.created_at_ms),
        "completed_at": rfc3339(job.completed_at_ms),
        "image": job.image or None,
        "assigned_worker": job.assigned_worker or None,
        "exit_code": job.exit_code,
        "attempts": job.attempts,
        "timeout_seconds": job.timeout_seconds or None,
        "started_at": rfc3339(job.started_at_ms),
        "output_truncated": job.output_truncated,
        "attempt_history": [
            {
                "attempt": record.attempt,
                "worker": record.worker,
                "started_at_ms": record.started_at_ms,
                "finished_at_ms": record.finished_at_ms,
                "outcome": record.outcome and record.outcome.value,
                "late": record.late,
            }
            for record in job.attempt_history
        ],
    }


def cluster_json(raft_status, view: ClusterView) -> dict:
    """GET /api/cluster: this node's Raft state and the leader's view of the nodes."""
    return {
        "node_id": raft_status.node_id,
        "role": raft_status.role,
        "current_term": raft_status.current_term,
        "leader_id": raft_status.leader_id or None,
        "commit_index": raft_status.commit_index,
        "last_applied": raft_status.last_applied,
        "log_length": raft_status.last_log_index,
        "first_log_index": raft_status.first_log_index,
        "has_quorum": raft_status.has_quorum,
        "nodes": [dataclasses.asdict(node) for node in view.nodes],
        "entry_forms": view.entry_forms,
    }


def raft_log_json(view: LogView) -> dict:
    """GET /api/raft/log."""
    return {
        "entries": [
            {
                "index": entry.index,
                "term": entry.term,
                "type": entry.command.WhichOneof("command_type") or "noop",
                "is_committed": entry.index <= view.commit_index,
            }
            for entry in view.entries
        ],
        "commit_index": view.commit_index,
        "last_log_index": view.last_log_index,
        "first_available_index": view.first_available_index,
    }
