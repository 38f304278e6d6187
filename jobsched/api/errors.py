"""Typed errors of jobsched and the one table that maps them to gRPC codes and HTTP statuses.

Every layer raises these; the gRPC servicers and the REST app translate them with
`grpc_code` and `http_status`. The message is exactly the text of spec API.md.
"""

from __future__ import annotations

import grpc


class JobschedError(Exception):
    """Base of every error a client can be shown."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    default_message = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)


class InvalidArgument(JobschedError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    default_message = "Invalid argument"


class PermissionDenied(JobschedError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    default_message = "Image not allowed"


class NotFound(JobschedError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    default_message = "Job not found"


class AlreadyTerminal(JobschedError):
    """Cancelling a job that already finished."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 400

    def __init__(self, status_label: str) -> None:
        super().__init__(f"job is already {status_label}")


class NotLeader(JobschedError):
    """This node cannot serve a write; `leader_address` is the leader's client address."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 503

    def __init__(self, leader_id: int | None = None, leader_address: str | None = None) -> None:
        self.leader_id = leader_id
        self.leader_address = leader_address
        if leader_address:
            message = f"Not the leader. Try {leader_address}"
        else:
            message = "Not the leader. Leader unknown, retry later"
        super().__init__(message)


class Draining(JobschedError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "Node is draining and not accepting new jobs"


class QueueFull(JobschedError):
    """More than the allowed number of active jobs."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 503
    default_message = "Job queue is at capacity"


class Overloaded(JobschedError):
    """Too many proposals already wait for commit on this leader."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 503
    default_message = "Server is overloaded; retry with backoff"


class CommitTimeout(JobschedError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    default_message = "Raft did not commit the entry in time"


class LeadershipLost(JobschedError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "Leadership lost; retry"


class RaftStopped(JobschedError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "Raft loop is not running"


class LeaderUnavailable(JobschedError):
    """A call that only the leader answers could not reach one."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "Leader unknown, please retry later"


class StorageFailed(JobschedError):
    """The durable store refused a write; the node stops serving."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "Storage failure; node is stopping"


HTTP_STATUS_BY_GRPC_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class RemoteError(JobschedError):
    """An error the leader answered to a forwarded call, passed on unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.grpc_code = code
        self.http_status = HTTP_STATUS_BY_GRPC_CODE.get(code, 500)


def remote_error(code: grpc.StatusCode, message: str) -> JobschedError:
    """The typed error for a status another node answered (NotLeader keeps its hint)."""
    prefix = "Not the leader. Try "
    if code == grpc.StatusCode.FAILED_PRECONDITION and message.startswith(prefix):
        return NotLeader(None, message[len(prefix) :])
    if code == grpc.StatusCode.FAILED_PRECONDITION and message.startswith("Not the leader"):
        return NotLeader()
    return RemoteError(code, message)
