"""The REST API and dashboard (Klein): a thin adapter over ClusterAPI.

Importing this module imports klein, which installs the default reactor; only
jobsched.node imports it, lazily, from makeService (STACK-NOTES pitfall 1).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from klein import Klein
from twisted.internet import defer
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from zope.interface import implementer

from jobsched.api import errors
from jobsched.app import ClusterAPI, ClusterView
from jobsched.interfaces import IWebApp
from jobsched.jobs import validation
from jobsched.jobs.model import Job, JobStatus
from jobsched.jobs.table import ListQuery
from jobsched.leader_client import LeaderUnreachable

MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Content-Security-Policy": (
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        b"form-action 'self'"
    ),
    b"Referrer-Policy": b"no-referrer",
}
STATUS_BY_LABEL = {status.label: status for status in JobStatus}
NO_LEADER_ERRORS = (errors.NotLeader, errors.LeaderUnavailable, LeaderUnreachable)


class BadRequest(Exception):
    """A REST request whose shape is wrong (not JSON, bad parameter...)."""


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


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
    }


def cluster_nodes_json(view: ClusterView) -> list:
    return [dataclasses.asdict(node) for node in view.nodes]


@implementer(IWebApp)
class RestApi:
    """Routes of API.md section 3 over one ClusterAPI."""

    app = Klein()

    def __init__(self, api: ClusterAPI) -> None:
        self._api = api
        self._dashboard = (
            resources.files("jobsched.api").joinpath("dashboard/index.html").read_bytes()
        )

    def resource(self):
        return self.app.resource()

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _respond(request, status: int, body: Any, content_type: bytes = b"application/json"):
        request.setResponseCode(status)
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        if content_type == b"application/json":
            return json.dumps(body).encode("utf-8")
        return body

    def _error(self, request, status: int, message: str, **extra):
        return self._respond(request, status, {"error": message, **extra})

    @app.handle_errors(RouteNotFound)
    def _unknown_route(self, request, failure):
        return self._error(request, 404, "not found")

    @app.handle_errors(MethodNotAllowed)
    def _wrong_method(self, request, failure):
        return self._error(request, 405, "method not allowed")

    @staticmethod
    def _read_json(request) -> Any:
        body = request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge()
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None

    @staticmethod
    def _leader_hint(request, error) -> dict:
        address = getattr(error, "leader_address", None)
        if address:
            request.setHeader(b"X-Leader-Address", address.encode())
            return {"leader_hint": address}
        return {}

    # ------------------------------------------------------------------ pages

    @app.route("/", methods=["GET"])
    def index(self, request):
        return self._respond(request, 200, self._dashboard, b"text/html; charset=utf-8")

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        lines = []
        for name, labels, value in self._api.metrics():
            lines.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
        body = ("\n".join(lines) + "\n").encode()
        return self._respond(request, 200, body, b"text/plain; version=0.0.4; charset=utf-8")

    @app.route("/health/live", methods=["GET"])
    def live(self, request):
        return self._respond(request, 200, {"status": "ok"})

    @app.route("/health/ready", methods=["GET"])
    def ready(self, request):
        if self._api.is_ready():
            leader_id = self._api.local_cluster_view().leader_id
            return self._respond(request, 200, {"status": "ok", "leader_id": leader_id})
        return self._respond(request, 503, {"status": "no_leader", "leader_id": None})

    # ------------------------------------------------------------------ cluster

    @app.route("/api/cluster", methods=["GET"])
    @defer.inlineCallbacks
    def cluster(self, request):
        raft_status = self._api.raft_status()
        try:
            view = yield self._api.cluster_status()
        except errors.JobschedError:
            view = self._api.local_cluster_view()
        return self._respond(
            request,
            200,
            {
                "node_id": raft_status.node_id,
                "role": raft_status.role,
                "current_term": raft_status.current_term,
                "leader_id": raft_status.leader_id or None,
                "commit_index": raft_status.commit_index,
                "last_applied": raft_status.last_applied,
                "log_length": raft_status.last_log_index,
                "first_log_index": raft_status.first_log_index,
                "has_quorum": raft_status.has_quorum,
                "nodes": cluster_nodes_json(view),
            },
        )

    @app.route("/api/cluster/transfer-leader", methods=["POST"])
    @defer.inlineCallbacks
    def transfer_leader(self, request):
        try:
            body = self._read_json(request)
            target = _transfer_target(body)
        except _TooLarge:
            return self._error(request, 413, "request body too large")
        except BadRequest as error:
            return self._error(request, 400, str(error))
        success, message, new_leader_id = yield self._api.transfer_leadership(target)
        return self._respond(
            request,
            200 if success else 409,
            {
                "success": success,
                "message": message,
                "new_leader_id": new_leader_id or None,
                "error": None if success else message,
            },
        )

    @app.route("/api/nodes/self/drain", methods=["POST"])
    @defer.inlineCallbacks
    def drain(self, request):
        success, message = yield self._api.drain()
        return self._respond(
            request,
            200 if success else 409,
            {"success": success, "message": message, "error": None if success else message},
        )

    @app.route("/api/raft/log", methods=["GET"])
    @defer.inlineCallbacks
    def raft_log(self, request):
        try:
            start = _int_arg(request, "start_index", 0)
            limit = _int_arg(request, "limit", 0)
        except BadRequest as error:
            return self._error(request, 400, str(error))
        try:
            view = yield self._api.raft_log(start, limit)
        except errors.JobschedError as error:
            return self._error(request, error.http_status, error.message)
        return self._respond(
            request,
            200,
            {
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
            },
        )

    # ------------------------------------------------------------------ jobs

    @app.route("/api/jobs", methods=["GET"])
    def list_jobs(self, request):
        try:
            query = _list_query(request)
        except BadRequest as error:
            return self._error(request, 400, str(error))
        try:
            if query.page_size:
                page = self._api.list_jobs(query)
                request.setHeader(b"X-Next-Page-Token", page.next_page_token.encode())
                return self._respond(request, 200, [job_json(job) for job in page.jobs])
            return self._respond(request, 200, [job_json(job) for job in self._all_jobs(query)])
        except errors.JobschedError as error:
            return self._error(request, error.http_status, error.message)

    def _all_jobs(self, query: ListQuery):
        token = ""
        while True:
            page = self._api.list_jobs(dataclasses.replace(query, page_size=1000, page_token=token))
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    @app.route("/api/jobs", methods=["POST"])
    @defer.inlineCallbacks
    def submit(self, request):
        def refuse(status, message, **extra):
            return self._respond(
                request, status, {"success": False, "job_id": None, "error": message, **extra}
            )

        try:
            body = self._read_json(request)
            fields = _submit_fields(body)
        except _TooLarge:
            return refuse(413, "request body too large")
        except BadRequest as error:
            return refuse(400, str(error))
        try:
            job_id, status = yield self._api.submit_anywhere(**fields)
        except NO_LEADER_ERRORS as error:
            return refuse(503, "Not the leader", **self._leader_hint(request, error))
        except errors.JobschedError as error:
            return refuse(error.http_status, error.message)
        return self._respond(
            request, 200, {"job_id": job_id, "status": status, "success": True, "error": None}
        )

    @app.route("/api/jobs/<string:job_id>", methods=["GET"])
    def get_job(self, request, job_id):
        if validation.parse_uuid(job_id) is None:
            return self._error(request, 400, "invalid job id")
        try:
            job = self._api.get_job(job_id)
        except errors.NotFound:
            return self._error(request, 404, "job not found")
        return self._respond(request, 200, job_json(job))

    @app.route("/api/jobs/<string:job_id>", methods=["DELETE"])
    @defer.inlineCallbacks
    def cancel(self, request, job_id):
        def refuse(status, message, **extra):
            return self._respond(request, status, {"success": False, "error": message, **extra})

        if validation.parse_uuid(job_id) is None:
            return refuse(400, "invalid job id")
        try:
            yield self._api.cancel_anywhere(job_id)
        except NO_LEADER_ERRORS as error:
            return refuse(503, "not the leader", **self._leader_hint(request, error))
        except errors.JobschedError as error:
            return refuse(error.http_status, error.message)
        return self._respond(request, 200, {"success": True, "error": None})


class _TooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""


def _submit_fields(body: Any) -> dict:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    command = body.get("command")
    if not isinstance(command, str):
        raise BadRequest("command is required and must be a string")
    image = body.get("image")
    if image is not None and not isinstance(image, str):
        raise BadRequest("image must be a string")
    timeout = body.get("timeout_seconds", 0)
    if timeout is None:
        timeout = 0
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise BadRequest("timeout_seconds must be a non-negative integer")
    key = body.get("idempotency_key") or ""
    if not isinstance(key, str):
        raise BadRequest("idempotency_key must be a string")
    return {"command": command, "image": image, "timeout_seconds": timeout, "idempotency_key": key}


def _transfer_target(body: Any) -> int:
    if body is None:
        return 0
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    target = body.get("target_node_id") or 0
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise BadRequest("target_node_id must be a non-negative integer")
    return target


def _arg(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not valid UTF-8") from None


def _int_arg(request, name: str, default: int) -> int:
    raw = _arg(request, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a non-negative integer") from None
    if value < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return value


def _list_query(request) -> ListQuery:
    status_label = _arg(request, "status")
    status = None
    if status_label:
        status = STATUS_BY_LABEL.get(status_label.lower())
        if status is None:
            raise BadRequest(f"unknown status {status_label!r}")
    limit = _int_arg(request, "limit", 0)
    if _arg(request, "limit") is not None and limit == 0:
        raise BadRequest("limit must be a positive integer")
    return ListQuery(
        page_size=limit,
        page_token=_arg(request, "page_token") or "",
        status=status,
        worker_id=_int_arg(request, "worker", 0),
        command_substring=_arg(request, "command") or "",
        created_after_ms=_int_arg(request, "created_after_ms", 0),
        created_before_ms=_int_arg(request, "created_before_ms", 0),
    )
