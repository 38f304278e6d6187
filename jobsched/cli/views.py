"""The JSON objects of `-o json`: exactly the keys of CLI.md, in its order.

A node or worker id of 0 on the wire means "none" and, like an absent optional field,
becomes null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from jobsched._proto import scheduler_pb2 as pb

STATUS_PREFIX = "JOB_STATUS_"
STATUS_NAMES = ("pending", "running", "completed", "failed", "cancelled")


def status_name(number: int) -> str:
    """`PENDING`, `RUNNING`, ... as the CLI prints a JobStatus."""
    return pb.JobStatus.Name(number).removeprefix(STATUS_PREFIX)


def status_number(name: str) -> int | None:
    """The JobStatus of a status name in any case, or None."""
    if name.lower() not in STATUS_NAMES:
        return None
    return pb.JobStatus.Value(STATUS_PREFIX + name.upper())


def _optional(message, field: str):
    return getattr(message, field) if message.HasField(field) else None


def _node(node_id: int) -> int | None:
    return node_id or None


def submitted(response: pb.SubmitJobResponse) -> dict:
    return {"job_id": response.job_id, "created_at_ms": response.created_at_ms}


def submitted_batch(responses: list[pb.SubmitJobResponse]) -> dict:
    """`job submit --file`: each job as `job submit` shows one, in file order."""
    return {"jobs": [submitted(response) for response in responses]}


def job_status(response: pb.GetJobStatusResponse) -> dict:
    return {
        "job_id": response.job_id,
        "status": status_name(response.status),
        "output": response.output,
        "error": response.error,
        "assigned_worker": _node(response.assigned_worker),
        "executed_by": _node(response.executed_by),
        "exit_code": _optional(response, "exit_code"),
        "created_at_ms": response.created_at_ms,
        "completed_at_ms": _optional(response, "completed_at_ms"),
        "started_at_ms": _optional(response, "started_at_ms"),
        "image": response.image or None,
        "timeout_seconds": response.timeout_seconds,
        "attempts": response.attempts,
        "output_truncated": response.output_truncated,
        "attempt_history": [attempt_json(record) for record in response.attempt_history],
    }


def attempt_json(record: pb.AttemptRecord) -> dict:
    """One attempt of a job (API.md §4 "Attempt history")."""
    return {
        "attempt": record.attempt,
        "worker": _node(record.worker),
        "started_at_ms": _optional(record, "started_at_ms"),
        "finished_at_ms": _optional(record, "finished_at_ms"),
        "outcome": record.outcome or None,
        "late": record.late,
    }


def output_chunk(stream: str, data: str, offset: int) -> dict:
    """One piece of a job's output (`job logs -o json`, one object per line)."""
    return {"stream": stream, "data": data, "offset": offset}


def output_end(status: str, exit_code: int | None) -> dict:
    """The last object of `job logs -o json`, once the job is final."""
    return {"exit_code": exit_code, "status": status}


def cancelled(response: pb.CancelJobResponse) -> dict:
    return {"success": response.success, "message": response.message}


def job_row(job: pb.JobInfo) -> dict:
    return {
        "job_id": job.job_id,
        "status": status_name(job.status),
        "command": job.command,
        "assigned_worker": _node(job.assigned_worker),
        "created_at_ms": job.created_at_ms,
    }


def job_list(jobs: Iterable[pb.JobInfo], total_count: int, has_more: bool) -> dict:
    return {
        "jobs": [job_row(job) for job in jobs],
        "total_count": total_count,
        "has_more": has_more,
    }


def cluster_status(response: pb.GetClusterStatusResponse) -> dict:
    return {
        "current_term": response.current_term,
        "leader_id": _node(response.leader_id),
        "nodes": [
            {"node_id": node.node_id, "address": node.address, "is_alive": node.is_alive}
            for node in response.nodes
        ],
    }


def transferred(response: pb.TransferLeadershipResponse) -> dict:
    return {
        "success": response.success,
        "message": response.message,
        "new_leader_id": _node(response.new_leader_id),
    }


def drained(response: pb.DrainNodeResponse) -> dict:
    return {"success": response.success, "message": response.message}


def _updates(updates) -> str:
    return f"{len(updates)} updates"


_DETAILS: dict[str, Callable[[object], str]] = {
    "submit_job": lambda c: f"job_id={c.job_id}, cmd={c.command}",
    "update_job_status": lambda c: f"job_id={c.job_id}, status={status_name(c.status)}",
    "register_worker": lambda c: f"worker_id={c.worker_id}",
    "batch_update_job_status": lambda c: _updates(c.updates),
    "assign_job": lambda c: f"job_id={c.job_id}, worker_id={c.worker_id}",
    "cancel_job": lambda c: c.job_id,
    "requeue_job": lambda c: f"job_id={c.job_id}, attempt={c.attempt}",
    "submit_jobs": lambda c: f"{len(c.jobs)} jobs",
    "assign_jobs": lambda c: f"{len(c.assignments)} assignments",
}


def command_type(command: pb.Command) -> str:
    """`SubmitJob`, `AssignJob`, ... (the command's message name), `Noop` when empty."""
    which = command.WhichOneof("command_type")
    if which is None:
        return "Noop"
    return command.DESCRIPTOR.fields_by_name[which].message_type.name.removesuffix("Command")


def command_details(command: pb.Command) -> str:
    which = command.WhichOneof("command_type")
    if which is None or which not in _DETAILS:
        return ""
    return _DETAILS[which](getattr(command, which))


def log_entry(entry: pb.RaftLogEntryInfo) -> dict:
    return {
        "index": entry.index,
        "term": entry.term,
        "command_type": command_type(entry.command),
        "command_details": command_details(entry.command),
        "is_committed": entry.is_committed,
    }


def raft_log(response: pb.GetRaftLogEntriesResponse) -> dict:
    return {
        "entries": [log_entry(entry) for entry in response.entries],
        "commit_index": response.commit_index,
        "last_log_index": response.last_log_index,
        "first_available_index": response.first_available_index,
    }
