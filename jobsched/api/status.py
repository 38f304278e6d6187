"""The one table from error codes (jobsched.errors) to gRPC status codes and HTTP statuses.

Both adapters use it; the code itself travels along as data (API.md §4).
"""

from __future__ import annotations

import grpc

from jobsched import errors
from jobsched.net import metadata

_STATUS_BY_CODE: dict[str, tuple[grpc.StatusCode, int]] = {
    "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "PERMISSION_DENIED": (grpc.StatusCode.PERMISSION_DENIED, 403),
    "UNAUTHENTICATED": (grpc.StatusCode.UNAUTHENTICATED, 401),
    "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, 404),
    "ALREADY_TERMINAL": (grpc.StatusCode.FAILED_PRECONDITION, 400),
    "NOT_LEADER": (grpc.StatusCode.FAILED_PRECONDITION, 503),
    "NO_LEADER": (grpc.StatusCode.UNAVAILABLE, 503),
    "DRAINING": (grpc.StatusCode.UNAVAILABLE, 503),
    "CAPACITY": (grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
    "OVERLOADED": (grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
    "COMMIT_TIMEOUT": (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    "STREAM_STALLED": (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    "UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, 503),
    "STORAGE_FAILURE": (grpc.StatusCode.UNAVAILABLE, 503),
    "TOO_LARGE": (grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    "INTERNAL": (grpc.StatusCode.INTERNAL, 500),
}


def grpc_status(error: errors.JobschedError) -> grpc.StatusCode:
    return _STATUS_BY_CODE[error.code][0]


def http_status(error: errors.JobschedError) -> int:
    return _STATUS_BY_CODE[error.code][1]


def error_trailers(error: errors.JobschedError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of an error: its code, and a NOT_LEADER's leader address."""
    trailers = [(metadata.ERROR_CODE, error.code)]
    if isinstance(error, errors.NotLeader) and error.leader_address:
        trailers.append((metadata.LEADER_ADDRESS, error.leader_address))
    return tuple(trailers)


async def abort_with(context: grpc.aio.ServicerContext, error: errors.JobschedError):
    """End a gRPC call with `error`: its status, its message, its code as metadata.

    Raises grpc's AbortError, which ends the handler."""
    await context.abort(grpc_status(error), error.message, error_trailers(error))
