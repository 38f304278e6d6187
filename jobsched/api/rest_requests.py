"""Reading REST requests: JSON bodies and query parameters, with the errors of API.md.

Every function raises a typed error of jobsched.errors (InvalidArgument, TooLarge) for
input it cannot take, so the routes answer it as JSON with its code.
"""

from __future__ import annotations

import json
from typing import Any

from jobsched import errors
from jobsched.app import SubmitRequest
from jobsched.jobs.model import JobStatus
from jobsched.jobs.table import ListQuery
from jobsched.worker.live_output import OutputCursor

MAX_BODY_BYTES = 64 * 1024
MAX_UINT32 = 2**32 - 1
MAX_INT64 = 2**63 - 1
SUBMIT_FIELDS = ("command", "image", "timeout_seconds", "idempotency_key", "max_attempts")
STATUS_BY_LABEL = {status.label: status for status in JobStatus}


def read_json(request, empty: Any = None) -> Any:
    """The request body as JSON; `empty` for an empty body (a JSON `null` is None)."""
    body = request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise errors.TooLarge()
    if not body.strip():
        return empty
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise errors.InvalidArgument("request body is not valid JSON") from None


def submit_request(body: Any) -> SubmitRequest:
    """POST /api/jobs: a JSON object with `command` and the optional fields of API.md
    §3.3 and §4; any other field is refused by name."""
    _object_of(body, SUBMIT_FIELDS)
    command = body.get("command")
    if not isinstance(command, str):
        raise errors.InvalidArgument("command is required and must be a string")
    image = body.get("image")
    if image is not None and not isinstance(image, str):
        raise errors.InvalidArgument("image must be a string")
    key = body.get("idempotency_key")
    if key is not None and not isinstance(key, str):  # null is absent; false is no key
        raise errors.InvalidArgument("idempotency_key must be a string")
    return SubmitRequest(
        command=command,
        image=image,
        timeout_seconds=_body_int(body, "timeout_seconds"),
        idempotency_key=key or "",
        max_attempts=_body_int(body, "max_attempts"),
    )


def submit_batch(body: Any) -> list[SubmitRequest]:
    """POST /api/jobs/batch: `{"jobs": [<as POST /api/jobs>, ...]}`; a job's error
    names its place, `job <i>: ...` (from 0)."""
    _object_of(body, ("jobs",))
    jobs = body.get("jobs")
    if not isinstance(jobs, list):
        raise errors.InvalidArgument("jobs is required and must be an array")
    requests = []
    for i, job in enumerate(jobs):
        try:
            requests.append(submit_request(job))
        except errors.InvalidArgument as error:
            raise errors.InvalidArgument(f"job {i}: {error.message}") from None
    return requests


def _object_of(body: Any, fields) -> None:
    """`body` must be a JSON object naming no field outside `fields`."""
    if not isinstance(body, dict):
        raise errors.InvalidArgument("request body must be a JSON object")
    for name in body:
        if name not in fields:
            raise errors.InvalidArgument(f"unknown field: {name}")


def _body_int(body: dict, name: str, maximum: int = MAX_UINT32) -> int:
    """A non-negative integer field up to `maximum`; 0 when absent or null."""
    value = body.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise errors.InvalidArgument(f"{name} must be a non-negative integer")
    return value


def transfer_target(body: Any) -> int:
    """POST /api/cluster/transfer-leader: the target node id (0 or none = let the leader
    pick); any other field is refused by name. An empty body reads as `{}`."""
    _object_of(body, ("target_node_id",))
    return _body_int(body, "target_node_id", MAX_INT64)


def text_arg(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidArgument(f"{name} is not valid UTF-8") from None


def int_arg(request, name: str, default: int = 0, maximum: int = MAX_INT64) -> int:
    """A non-negative integer query parameter, at most `maximum`."""
    raw = text_arg(request, name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise errors.InvalidArgument(f"{name} must be a non-negative integer")
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:  # int() takes 4300 digits
        raise errors.InvalidArgument(f"{name} must be at most {maximum}")
    return int(digits)


def flag_arg(request, name: str) -> bool:
    """A yes/no query parameter: `1`/`true`/`yes` or `0`/`false`/`no` (absent: no)."""
    raw = (text_arg(request, name) or "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise errors.InvalidArgument(f"{name} must be 1 or 0")


def output_cursor(request) -> OutputCursor:
    """GET /api/jobs/{id}/output: where to start (`attempt`, `stdout_offset`,
    `stderr_offset`; absent: the start of the current attempt)."""
    return OutputCursor(
        int_arg(request, "attempt", maximum=MAX_UINT32),
        int_arg(request, "stdout_offset"),
        int_arg(request, "stderr_offset"),
    )


def last_event_id(request) -> int | None:
    """GET /api/events: the `Last-Event-ID` header as a commit index; None when absent,
    -1 when it is not one (such a client gets a `reset`)."""
    raw = request.getHeader(b"last-event-id")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return -1
    return int(raw)


def list_query(request) -> ListQuery:
    """GET /api/jobs: the filters and paging of ListJobs as query parameters."""
    status_label = text_arg(request, "status")
    status = None
    if status_label:
        status = STATUS_BY_LABEL.get(status_label.lower())
        if status is None:
            raise errors.InvalidArgument(f"unknown status {status_label!r}")
    limit = int_arg(request, "limit", maximum=MAX_UINT32)
    if text_arg(request, "limit") is not None and limit == 0:
        raise errors.InvalidArgument("limit must be a positive integer")
    order = text_arg(request, "order") or "asc"
    if order not in ("asc", "desc"):
        raise errors.InvalidArgument("order must be asc or desc")
    return ListQuery(
        page_size=limit,
        page_token=text_arg(request, "page_token") or "",
        status=status,
        worker_id=int_arg(request, "worker"),
        command_substring=text_arg(request, "command") or "",
        created_after_ms=int_arg(request, "created_after_ms"),
        created_before_ms=int_arg(request, "created_before_ms"),
        newest_first=order == "desc",
    )
