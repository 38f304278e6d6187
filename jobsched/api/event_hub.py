"""The event hub behind GET /api/events (API.md §4 Events; docs/dashboard.md).

It listens to the job table and to Raft on the reactor and tells every open stream:

- `job`: the REST job object after each applied change. Changes are collected while
  Raft applies a batch of entries and sent together once the batch is applied; their
  `id` is the commit index applied by then, so a snapshot read at applied index S
  (GET /api/jobs answers `X-Applied-Index`) already holds every event with id <= S.
- `cluster`: this node's Raft state, the leader's view of the nodes (roles, match
  index, liveness, draining) and the job counts; sent on connect, on role changes and
  whenever it changes (at most every CLUSTER_MIN_INTERVAL), checked every second.
- `reset`: the client's position cannot be resumed: reload a snapshot.

A bounded ring of recent job events lets a client resume: `Last-Event-ID: N` replays
every event with id >= N (the events of one id may have been cut in the middle; each
event is a whole state, so a repeat is harmless) when the ring still holds them all.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from jobsched import errors
from jobsched.api.json_views import cluster_json, job_json
from jobsched.api.sse import KEEPALIVE, EventStream, frame
from jobsched.app import ClusterView
from jobsched.interfaces import IClusterAPI, IEventHub, IJobTable, IRaftService, IRouter
from jobsched.jobs.model import Job

MAX_STREAMS = 64
RING_EVENTS = 4096
RING_BYTES = 16 * 1024 * 1024
TICK_SECONDS = 1.0
CLUSTER_MIN_INTERVAL = 0.25
KEEPALIVE_SECONDS = 15.0
JOB_OVERHEAD_BYTES = 600  # a job event's frame, besides its command, output and error

log = Logger()


@dataclass
class JobEvent:
    """One job change in the ring; its frame is encoded when a stream first needs it."""

    id: int
    job: Job
    size: int
    _frame: bytes | None = field(default=None, repr=False)

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = frame("job", job_json(self.job), self.id)
        return self._frame


@implementer(IEventHub)
class EventHub(Service):
    """Fans applied job changes and cluster state out to open SSE streams."""

    def __init__(
        self,
        table: IJobTable,
        raft: IRaftService,
        api: IClusterAPI,
        router: IRouter,
        clock: IReactorTime,
        max_streams: int = MAX_STREAMS,
        ring_events: int = RING_EVENTS,
        ring_bytes: int = RING_BYTES,
    ) -> None:
        self._raft = raft
        self._api = api
        self._router = router
        self._clock = clock
        self._max_streams = max_streams
        self._ring_events = ring_events
        self._ring_bytes = ring_bytes
        self._streams: set[EventStream] = set()
        self._changed: list[Job] = []
        self._ring: deque[JobEvent] = deque()
        self._ring_size = 0
        # Every job event with an id >= floor is in the ring (None: none resumable yet).
        self._floor: int | None = 0
        self._nodes: ClusterView | None = None
        self._nodes_at = -1.0
        self._nodes_waiters: list[defer.Deferred] = []
        self._nodes_generation = 0
        self._last_cluster: dict | None = None
        self._last_cluster_at = -1.0
        self._cluster_call = None
        self._tick = task.LoopingCall(self._on_tick)
        self._tick.clock = clock
        self._last_keepalive = 0.0
        table.add_listener(self._on_job_change)
        raft.add_observer(self._on_raft)

    # ------------------------------------------------------------------ IEventHub

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def open(self, request, last_event_id: int | None) -> defer.Deferred:
        """Start a stream on `request` (headers already set): a `reset` or the replay
        `last_event_id` asks for, then the cluster state, then live events. Returns the
        stream's `done`; raises Overloaded when MAX_STREAMS are open."""
        if len(self._streams) >= self._max_streams:
            raise errors.Overloaded("too many event streams; retry later")
        stream = EventStream(request, self._clock, self._streams.discard)
        self._streams.add(stream)
        stream.open()
        if last_event_id is not None:
            self._catch_up(stream, last_event_id)
        if not self._tick.running:
            self._last_keepalive = self._clock.seconds()
            self._tick.start(TICK_SECONDS, now=False)
        if self._nodes_fresh():
            stream.send(self._cluster_frame(self._cluster_state()))
        else:
            self._refresh_nodes().addCallback(
                lambda _: stream.send(self._cluster_frame(self._cluster_state()))
            )
        return stream.done

    def _catch_up(self, stream: EventStream, last_event_id: int) -> None:
        applied = self._raft.last_applied
        if self._floor is None or not self._floor <= last_event_id <= applied:
            stream.send(frame("reset", {"reason": "cannot resume from that event id"}))
            return
        replay = [event.frame for event in self._ring if event.id >= last_event_id]
        if replay:
            stream.send(b"".join(replay))

    def stopService(self):
        Service.stopService(self)
        for stream in list(self._streams):
            stream.close()
        if self._tick.running:
            self._tick.stop()
        if self._cluster_call is not None and self._cluster_call.active():
            self._cluster_call.cancel()

    # ------------------------------------------------------------------ job events

    def _on_job_change(self, event: str, job: Job | None) -> None:
        if event == "restored":
            self._changed.clear()
            self._ring.clear()
            self._ring_size = 0
            self._floor = None
            self._broadcast(frame("reset", {"reason": "the job table was replaced"}))
            return
        self._changed.append(job)

    def _on_raft(self, event: str) -> None:
        if event == "applied":
            self._flush_jobs()
        if self._streams:
            self._want_cluster(urgent=event == "role")

    def _flush_jobs(self) -> None:
        if not self._changed:
            return
        changed, self._changed = self._changed, []
        event_id = self._raft.last_applied
        events = [JobEvent(event_id, job, _size(job)) for job in changed]
        self._remember(events)
        if self._streams:
            self._broadcast(b"".join(event.frame for event in events))

    def _remember(self, events: list[JobEvent]) -> None:
        """Add the events of one applied batch to the ring, then evict down to its
        bounds (never the newest event)."""
        if self._floor is None:
            self._floor = events[0].id
        self._ring.extend(events)
        self._ring_size += sum(event.size for event in events)
        while len(self._ring) > 1 and (
            len(self._ring) > self._ring_events or self._ring_size > self._ring_bytes
        ):
            evicted = self._ring.popleft()
            self._ring_size -= evicted.size
            self._floor = evicted.id + 1

    def _broadcast(self, data: bytes) -> None:
        for stream in list(self._streams):
            stream.send(data)

    # ------------------------------------------------------------------ cluster events

    def _on_tick(self) -> None:
        for stream in list(self._streams):
            if stream.stalled():
                stream.drop()
        if not self._streams:
            self._tick.stop()
            return
        now = self._clock.seconds()
        if now - self._last_keepalive >= KEEPALIVE_SECONDS:
            self._last_keepalive = now
            self._broadcast(KEEPALIVE)
        self._refresh_nodes().addCallback(lambda _: self._send_cluster_if_changed())

    def _want_cluster(self, urgent: bool) -> None:
        """Send the cluster state soon: at once after a role change, else no sooner
        than CLUSTER_MIN_INTERVAL after the last one."""
        if self._cluster_call is not None and self._cluster_call.active():
            return
        now = self._clock.seconds()
        delay = 0.0 if urgent else max(0.0, self._last_cluster_at + CLUSTER_MIN_INTERVAL - now)
        action = self._refresh_after_role_change if urgent else self._send_cluster_if_changed
        self._cluster_call = self._clock.callLater(delay, action)

    def _refresh_after_role_change(self) -> None:
        self._send_cluster_if_changed()
        self._refresh_nodes(force=True).addCallback(lambda _: self._send_cluster_if_changed())

    def _send_cluster_if_changed(self) -> None:
        if not self._streams:
            return
        state = self._cluster_state()
        if state != self._last_cluster:
            self._broadcast(self._cluster_frame(state))

    def _cluster_frame(self, state: dict) -> bytes:
        self._last_cluster = state
        self._last_cluster_at = self._clock.seconds()
        return frame("cluster", state, self._raft.last_applied)

    def _cluster_state(self) -> dict:
        """GET /api/cluster's shape plus `jobs` (counts by status). A leader's view of
        the nodes is its own and current; a follower's is the leader's last answer."""
        local = self._api.is_leader() or self._nodes is None
        view = self._api.cluster_view() if local else self._nodes
        state = cluster_json(self._api.raft_status(), view)
        state["jobs"] = {status.label: n for status, n in self._api.job_counts().items()}
        return state

    def _nodes_fresh(self) -> bool:
        return self._nodes is not None and self._clock.seconds() - self._nodes_at < TICK_SECONDS

    def _refresh_nodes(self, force: bool = False) -> defer.Deferred:
        """Fetch the leader's view of the nodes (this node's own when the leader cannot
        be asked). One request at a time, except that `force` (after a role change: the
        leader may have moved) starts a new one whose answer wins."""
        if self._nodes_fresh() and not force and not self._nodes_waiters:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._nodes_waiters.append(waiter)
        if self._nodes_waiters[:-1] and not force:
            return waiter
        self._nodes_generation += 1
        generation = self._nodes_generation
        call = defer.maybeDeferred(self._router.cluster_status)
        call.addErrback(lambda _: self._api.cluster_view())
        call.addCallback(self._got_nodes, generation)
        call.addErrback(lambda failure: log.failure("Cluster view failed", failure))
        call.addBoth(self._release_waiters, generation)
        return waiter

    def _got_nodes(self, view: ClusterView, generation: int) -> None:
        if generation != self._nodes_generation:
            return
        self._nodes = self._with_own_draining(view)
        self._nodes_at = self._clock.seconds()

    def _release_waiters(self, _result, generation: int) -> None:
        if generation != self._nodes_generation:
            return
        waiters, self._nodes_waiters = self._nodes_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _with_own_draining(self, view: ClusterView) -> ClusterView:
        """The leader's view, with this node's draining flag as this node knows it (the
        leader learns it only with the node's next heartbeat)."""
        own_id = self._api.raft_status().node_id
        nodes = [
            dataclasses.replace(node, draining=True)
            if node.node_id == own_id and self._api.draining
            else node
            for node in view.nodes
        ]
        return dataclasses.replace(view, nodes=nodes)


def _size(job: Job) -> int:
    return JOB_OVERHEAD_BYTES + len(job.command) + len(job.output) + len(job.error)
