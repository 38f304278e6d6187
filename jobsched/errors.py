"""Typed errors of jobsched, each with a stable machine-readable code (API.md §4).

Every layer raises these; the adapters (gRPC servicers, REST) turn them into a status
code with the table in `jobsched.api.status`, and send `code` along as data (gRPC
trailing metadata `jobsched-error-code`, REST JSON `code`). Whatever turns an answer
back into an error (the leader client, the CLI) calls `from_code`: it reads the code,
never the message text. Messages are exactly those of API.md.
"""

from __future__ import annotations


class JobschedError(Exception):
    """Base of every error a client can be shown."""

    code = "INTERNAL"
    default_message = "Internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)


class InvalidArgument(JobschedError):
    code = "INVALID_ARGUMENT"
    default_message = "Invalid argument"


class PermissionDenied(JobschedError):
    code = "PERMISSION_DENIED"
    default_message = "Image not allowed"


class Unauthenticated(JobschedError):
    code = "UNAUTHENTICATED"
    default_message = "Authentication required"


class NotFound(JobschedError):
    code = "NOT_FOUND"
    default_message = "Job not found"


class AlreadyTerminal(JobschedError):
    """Cancelling a job that already finished; the message names its status."""

    code = "ALREADY_TERMINAL"
    default_message = "job is already finished"

    @classmethod
    def for_status(cls, status_label: str) -> AlreadyTerminal:
        return cls(f"job is already {status_label}")


class NotLeader(JobschedError):
    """This node cannot serve a write; `leader_address` is the leader's client address,
    given only for a leader heard from lately."""

    code = "NOT_LEADER"

    def __init__(self, leader_address: str | None = None, message: str | None = None) -> None:
        self.leader_address = leader_address or None
        if message is None:
            message = (
                f"Not the leader. Try {self.leader_address}"
                if self.leader_address
                else "Not the leader. Leader unknown, retry later"
            )
        super().__init__(message)


class NoLeader(JobschedError):
    """No leader is known or reachable for a call only the leader answers."""

    code = "NO_LEADER"
    default_message = "Leader unknown, please retry later"


class LeaderUnreachable(NoLeader):
    """A leader is known but the call to it failed (connection refused, deadline); it
    is no use as a hint."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Leader request failed: {reason}")


class LeadershipLost(JobschedError):
    """The entry was proposed by a leader that lost its leadership before it committed."""

    code = NoLeader.code
    default_message = "Leadership lost; retry"


class Draining(JobschedError):
    code = "DRAINING"
    default_message = "Node is draining and not accepting new jobs"


class QueueFull(JobschedError):
    """More than the allowed number of active jobs."""

    code = "CAPACITY"
    default_message = "Job queue is at capacity"


class Overloaded(JobschedError):
    """Too many proposals already wait for commit on this leader."""

    code = "OVERLOADED"
    default_message = "Server is overloaded; retry with backoff"


class TooManyStreams(Overloaded):
    """This node already serves as many open streams as it allows."""

    default_message = "Too many open streams; retry later"


class StreamStalled(JobschedError):
    """A server stream's reader read nothing for longer than the node allows; the
    stream was dropped."""

    code = "STREAM_STALLED"
    default_message = "Stream dropped: the reader stopped reading"

    @classmethod
    def after(cls, stall_seconds: float) -> StreamStalled:
        return cls(f"Stream dropped: the reader read nothing for {stall_seconds:g}s")


class CommitTimeout(JobschedError):
    code = "COMMIT_TIMEOUT"
    default_message = "Raft did not commit the entry in time"


class RaftStopped(JobschedError):
    """The consensus loop is not running (the node starts or stops)."""

    code = "UNAVAILABLE"
    default_message = "Raft loop is not running"


class NodeBusy(JobschedError):
    """The node did not get to a request within its deadline (a hop onto the reactor
    timed out); nothing is known to have happened."""

    code = RaftStopped.code
    default_message = "Node is busy; retry"


class StorageFailed(JobschedError):
    """The durable store refused a write; the node stops serving."""

    code = "STORAGE_FAILURE"
    default_message = "Storage failure; node is stopping"


class TooLarge(JobschedError):
    code = "TOO_LARGE"
    default_message = "request body too large"


_BY_CODE: dict[str, type[JobschedError]] = {
    error.code: error
    for error in (
        InvalidArgument,
        PermissionDenied,
        Unauthenticated,
        NotFound,
        AlreadyTerminal,
        NoLeader,
        Draining,
        QueueFull,
        Overloaded,
        StreamStalled,
        CommitTimeout,
        RaftStopped,
        StorageFailed,
        TooLarge,
    )
}

CODES = frozenset(_BY_CODE) | {NotLeader.code, JobschedError.code}
"""Every code an answer may carry (API.md §4, plus UNAVAILABLE and INTERNAL)."""


def from_code(code: str, message: str, leader_address: str | None = None) -> JobschedError:
    """The typed error another node (or server) answered with `code` and `message`."""
    if code == NotLeader.code:
        return NotLeader(leader_address, message)
    return _BY_CODE.get(code, JobschedError)(message)
