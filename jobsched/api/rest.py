"""The REST API and dashboard (Klein): a thin adapter over ClusterAPI and the router.

Importing this module imports klein, which installs the default reactor; only
jobsched.node imports it, lazily, from makeService (STACK-NOTES pitfall 1).

Every error answer is JSON with `error` (the message of API.md) and `code` (API.md §4):
a URL that is not UTF-8 and an error no route expected included (never Klein's text or
Twisted's HTML). The node serves it with form parsing off (`SITE_OPTIONS`): a body is
JSON or nothing, never parsed into query arguments.

Every route declares who may call it (`needs`): with `--auth-token-file`, a bearer
token of at least that role (401 without a known token, 403 for a lower role), or
anyone (`needs(None)`: health, the dashboard's own files). A route that declares
nothing stops the node from building its REST site.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from klein.resource import KleinResource
from twisted.internet import defer
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from zope.interface import implementer

from jobsched import errors
from jobsched.api import rest_requests as parse
from jobsched.api.dashboard_files import DashboardFiles
from jobsched.api.json_views import cluster_json, job_json, raft_log_json
from jobsched.api.metrics import render_metrics
from jobsched.api.output_sse import OutputFeeds, cursor_of_event_id
from jobsched.api.status import http_status
from jobsched.interfaces import IClusterAPI, IEventHub, IRouter, IWebApp
from jobsched.jobs import validation
from jobsched.jobs.table import ListQuery
from jobsched.tokens import Role, TokenStore

SECURITY_HEADERS = {
    b"X-Content-Type-Options": b"nosniff",
    b"Content-Security-Policy": (
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        b"form-action 'self'"
    ),
    b"Referrer-Policy": b"no-referrer",
}
JSON = b"application/json"
EVENT_STREAM = b"text/event-stream; charset=utf-8"
NO_LEADER_ERRORS = (errors.NotLeader, errors.NoLeader)
TRANSFER_FAILED = "TRANSFER_FAILED"
DRAIN_FAILED = "DRAIN_FAILED"
SITE_OPTIONS = {"parsePOSTFormSubmission": False}
"""Keyword arguments of the twisted.web Site serving the app."""

log = Logger()

ROUTE_ROLES: dict[str, Role | None] = {}
"""Route (endpoint name) -> the role a token needs for it, None for anyone."""


def needs(role: Role | None) -> Callable:
    """Declare who may call the route below (see the module docstring)."""

    def declare(handler: Callable) -> Callable:
        ROUTE_ROLES[handler.__name__] = role
        if role is None:
            return handler

        @functools.wraps(handler)
        def guarded(self, request, *args, **kwargs):
            try:
                self._authorize(request, role)
            except errors.JobschedError as error:
                return self._refuse(request, error)
            return handler(self, request, *args, **kwargs)

        return guarded

    return declare


@implementer(IWebApp)
class RestApi:
    """Routes of API.md section 3 over one node."""

    app = Klein()
    app.url_map.merge_slashes = False  # `/api//jobs` is 404, not a redirect

    def __init__(
        self,
        api: IClusterAPI,
        router: IRouter,
        storage=None,
        events: IEventHub | None = None,
        streams=None,
        tokens: TokenStore | None = None,
        outputs: OutputFeeds | None = None,
    ) -> None:
        self._api = api
        self._router = router
        self._storage = storage
        self._events = events
        self._streams = streams
        self._tokens = tokens
        self._outputs = outputs
        self._files = DashboardFiles()

    def resource(self):
        undeclared = sorted(set(self.app.endpoints) - set(ROUTE_ROLES))
        if undeclared:
            raise RuntimeError(f"REST routes without an access rule: {', '.join(undeclared)}")
        return _Resource(self.app, self)

    def _authorize(self, request, role: Role) -> None:
        """Raise Unauthenticated / PermissionDenied unless the request's bearer token
        may do what needs `role` (nothing to check without tokens)."""
        if self._tokens is None:
            return
        header = request.getHeader(b"authorization")
        self._tokens.authorize(header.decode("latin-1") if header else None, role)

    def _refuse(self, request, error: errors.JobschedError):
        if isinstance(error, errors.Unauthenticated):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="jobsched"')
        return self._error(request, error)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _respond(request, status: int, body: Any, content_type: bytes = JSON):
        request.setResponseCode(status)
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        if content_type == JSON:
            return json.dumps(body).encode("utf-8")
        return body

    def _error(self, request, error: errors.JobschedError, status: int = 0, **body):
        """An error answer: `body` (e.g. success=false) plus `error` and `code`."""
        body.update(error=error.message, code=error.code)
        return self._respond(request, status or http_status(error), body)

    def _no_leader(self, request, error, message: str, **body):
        """The 503 of a write no leader could take, with the leader's address when known."""
        address = getattr(error, "leader_address", None)
        if address:
            request.setHeader(b"X-Leader-Address", address.encode())
            body["leader_hint"] = address
        body.update(error=message, code=error.code)
        return self._respond(request, 503, body)

    @app.handle_errors(RouteNotFound)
    def _unknown_route(self, request, failure):
        return self._error(request, errors.NotFound("not found"))

    @app.handle_errors(MethodNotAllowed)
    def _wrong_method(self, request, failure):
        return self._error(request, errors.InvalidArgument("method not allowed"), 405)

    @app.handle_errors(Exception)
    def _unexpected(self, request, failure):
        """A typed error no route caught gets its own answer; anything else is a bug:
        logged, and answered 500 INTERNAL as JSON."""
        if failure.check(errors.JobschedError):
            return self._error(request, failure.value)
        log.failure(
            "REST {method} {path} failed", failure, method=request.method, path=request.path
        )
        return self._error(request, errors.JobschedError())

    def bad_url(self, request):
        return self._error(request, errors.InvalidArgument("URL is not valid UTF-8"))

    # ------------------------------------------------------------------ pages

    @app.route("/", methods=["GET"])
    @needs(None)
    def index(self, request):
        return self._dashboard_file(request, "index.html")

    @app.route("/dashboard/<string:name>", methods=["GET"])
    @needs(None)
    def dashboard_file(self, request, name):
        return self._dashboard_file(request, name)

    def _dashboard_file(self, request, name: str):
        """A file of the dashboard; 304 when the browser holds this version."""
        page = self._files.get(name)
        if page is None:
            return self._error(request, errors.NotFound("not found"))
        fresh = request.getHeader(b"if-none-match") == page.etag
        body = self._respond(
            request, 304 if fresh else 200, b"" if fresh else page.body, page.content_type
        )
        request.setHeader(b"ETag", page.etag)
        request.setHeader(b"Cache-Control", b"no-cache")
        return body

    @app.route("/api/events", methods=["GET"])
    @needs(Role.READ)
    def events(self, request):
        """Server-sent events: job and cluster changes as they apply (event_hub.py)."""
        if self._events is None:
            return self._error(request, errors.NotFound("not found"))
        try:
            last_event_id = parse.last_event_id(request)
            self._respond(request, 200, b"", EVENT_STREAM)
            request.setHeader(b"X-Accel-Buffering", b"no")
            return self._events.open(request, last_event_id)
        except errors.JobschedError as error:
            return self._error(request, error)

    @app.route("/metrics", methods=["GET"])
    @needs(Role.READ)
    def metrics(self, request):
        body = render_metrics(self._api, self._storage, self._streams)
        return self._respond(request, 200, body, b"text/plain; version=0.0.4; charset=utf-8")

    @app.route("/health/live", methods=["GET"])
    @needs(None)
    def live(self, request):
        return self._respond(request, 200, {"status": "ok"})

    @app.route("/health/ready", methods=["GET"])
    @needs(None)
    def ready(self, request):
        if self._api.is_ready():
            leader_id = self._api.raft_status().leader_id
            return self._respond(request, 200, {"status": "ok", "leader_id": leader_id})
        return self._respond(request, 503, {"status": "no_leader", "leader_id": None})

    # ------------------------------------------------------------------ cluster

    @app.route("/api/cluster", methods=["GET"])
    @needs(Role.READ)
    @defer.inlineCallbacks
    def cluster(self, request):
        raft_status = self._api.raft_status()
        try:
            view = yield self._router.cluster_status()
        except errors.JobschedError:
            view = self._api.cluster_view()
        return self._respond(request, 200, cluster_json(raft_status, view))

    @app.route("/api/cluster/transfer-leader", methods=["POST"])
    @needs(Role.ADMIN)
    @defer.inlineCallbacks
    def transfer_leader(self, request):
        try:
            target = parse.transfer_target(parse.read_json(request, empty={}))
        except errors.JobschedError as error:
            return self._error(request, error)
        try:
            success, message, new_leader_id = yield self._router.transfer_leadership(target)
        except errors.JobschedError as error:
            return self._error(request, error, success=False)
        body = {"success": success, "message": message, "new_leader_id": new_leader_id or None}
        if not success:
            body.update(error=message, code=TRANSFER_FAILED)
            return self._respond(request, 409, body)
        return self._respond(request, 200, {**body, "error": None})

    @app.route("/api/nodes/self/drain", methods=["POST"])
    @needs(Role.ADMIN)
    @defer.inlineCallbacks
    def drain(self, request):
        success, message = yield self._api.drain()
        if not success:
            body = {"success": False, "message": message, "error": message, "code": DRAIN_FAILED}
            return self._respond(request, 409, body)
        return self._respond(request, 200, {"success": True, "message": message, "error": None})

    @app.route("/api/raft/log", methods=["GET"])
    @needs(Role.READ)
    @defer.inlineCallbacks
    def raft_log(self, request):
        try:
            start = parse.int_arg(request, "start_index")
            limit = parse.int_arg(request, "limit", maximum=parse.MAX_UINT32)
            view = yield self._router.raft_log(start, limit)
        except errors.JobschedError as error:
            return self._error(request, error)
        return self._respond(request, 200, raft_log_json(view))

    # ------------------------------------------------------------------ jobs

    @app.route("/api/jobs", methods=["GET"])
    @needs(Role.READ)
    def list_jobs(self, request):
        try:
            query = parse.list_query(request)
            self._set_applied_index(request)
            if query.page_size:
                page = self._api.list_jobs(query)
                request.setHeader(b"X-Next-Page-Token", page.next_page_token.encode())
                request.setHeader(b"X-Total-Count", str(page.total_count).encode())
                return self._respond(request, 200, [job_json(job) for job in page.jobs])
            return self._respond(request, 200, [job_json(job) for job in self._all_jobs(query)])
        except errors.JobschedError as error:
            return self._error(request, error)

    def _all_jobs(self, query: ListQuery):
        token = ""
        while True:
            page = self._api.list_jobs(dataclasses.replace(query, page_size=1000, page_token=token))
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    @app.route("/api/jobs", methods=["POST"])
    @needs(Role.SUBMIT)
    @defer.inlineCallbacks
    def submit(self, request):
        refused = {"success": False, "job_id": None}
        try:
            job_id, status = yield self._router.submit(
                parse.submit_request(parse.read_json(request))
            )
        except NO_LEADER_ERRORS as error:
            return self._no_leader(request, error, "Not the leader", **refused)
        except errors.JobschedError as error:
            return self._error(request, error, **refused)
        return self._respond(
            request, 200, {"job_id": job_id, "status": status, "success": True, "error": None}
        )

    @app.route("/api/jobs/<string:job_id>", methods=["GET"])
    @needs(Role.READ)
    def get_job(self, request, job_id):
        if validation.parse_uuid(job_id) is None:
            return self._error(request, errors.InvalidArgument("invalid job id"))
        try:
            job = self._api.get_job(job_id)
        except errors.NotFound:
            return self._error(request, errors.NotFound("job not found"))
        self._set_applied_index(request)
        return self._respond(request, 200, job_json(job))

    @app.route("/api/jobs/<string:job_id>/output", methods=["GET"])
    @needs(Role.READ)
    def job_output(self, request, job_id):
        """A job's output as server-sent events; with `follow=1` as it is produced,
        until the job is over (output_sse.py)."""
        if self._outputs is None:
            return self._error(request, errors.NotFound("not found"))
        if validation.parse_uuid(job_id) is None:
            return self._error(request, errors.InvalidArgument("invalid job id"))
        try:
            follow = parse.flag_arg(request, "follow")
            cursor = cursor_of_event_id(request.getHeader(b"last-event-id"))
            if cursor is None:
                cursor = parse.output_cursor(request)
            self._api.get_job(job_id)
            self._respond(request, 200, b"", EVENT_STREAM)
            request.setHeader(b"X-Accel-Buffering", b"no")
            return self._outputs.open(request, job_id, follow, cursor)
        except errors.NotFound:
            return self._error(request, errors.NotFound("job not found"))
        except errors.JobschedError as error:
            return self._error(request, error)

    def _set_applied_index(self, request) -> None:
        """The position of a read in the event stream: it holds every event whose id
        is at most this (docs/dashboard.md)."""
        applied = self._api.raft_status().last_applied
        request.setHeader(b"X-Applied-Index", str(applied).encode())

    @app.route("/api/jobs/<string:job_id>", methods=["DELETE"])
    @needs(Role.SUBMIT)
    @defer.inlineCallbacks
    def cancel(self, request, job_id):
        refused = {"success": False}
        if validation.parse_uuid(job_id) is None:
            return self._error(request, errors.InvalidArgument("invalid job id"), **refused)
        try:
            yield self._router.cancel(job_id)
        except NO_LEADER_ERRORS as error:
            return self._no_leader(request, error, "not the leader", **refused)
        except errors.JobschedError as error:
            return self._error(request, error, **refused)
        return self._respond(request, 200, {"success": True, "error": None})


class _Resource(KleinResource):
    """Klein's resource, except that a URL whose host or path is not UTF-8 gets the
    JSON error every other bad request gets (Klein answers it with bare text)."""

    def __init__(self, app: Klein, rest: RestApi) -> None:
        super().__init__(app)
        self._rest = rest

    def render(self, request):
        try:
            request.getRequestHostname().decode("utf-8")
            for segment in request.prepath + request.postpath:
                segment.decode("utf-8")
        except UnicodeDecodeError:
            return self._rest.bad_url(request)
        return super().render(request)
