"""HeartbeatSender: tells the leader, every 2 s, that this node's worker is alive, and
fences the worker (kills its jobs) when the leader has been out of reach for longer
than the worker expiry, since the leader has then given those jobs to others."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from jobsched._proto import scheduler_pb2 as pb
from jobsched.interfaces import IHeartbeatSender, IRaftService, IRouter, IWorker

HEARTBEAT_INTERVAL_SECONDS = 2.0
FENCE_CHECK_SECONDS = 0.5


@implementer(IHeartbeatSender)
class HeartbeatSender(Service):
    """Sends WorkerHeartbeat to the leader while this node follows (a leader's own
    worker needs none). A missed beat is simply sent again next time."""

    log = Logger()

    def __init__(
        self,
        node_id: int,
        raft: IRaftService,
        worker: IWorker,
        router: IRouter,
        is_draining: Callable[[], bool],
        clock,
        worker_expiry: float,
        interval: float = HEARTBEAT_INTERVAL_SECONDS,
    ) -> None:
        self._node_id = node_id
        self._raft = raft
        self._worker = worker
        self._router = router
        self._is_draining = is_draining
        self._clock = clock
        self._worker_expiry = worker_expiry
        self._interval = interval
        self._beats = task.LoopingCall(self.beat)
        self._beats.clock = clock
        self._fence_check = task.LoopingCall(self._check_fence)
        self._fence_check.clock = clock
        self._in_flight = False
        self._last_contact = clock.seconds()

    def startService(self) -> None:
        super().startService()
        self._last_contact = self._clock.seconds()
        self._raft.add_observer(self._on_raft_event)
        self._beats.start(self._interval, now=False)
        self._fence_check.start(FENCE_CHECK_SECONDS, now=False)

    def stopService(self):
        super().stopService()
        for loop in (self._beats, self._fence_check):
            if loop.running:
                loop.stop()

    def _on_raft_event(self, event: str) -> None:
        if event == "role" and self.running:
            self.beat()  # a new leader hears from us at once

    def beat(self) -> None:
        status = self._raft.status()
        if self._in_flight or status.role == "leader" or not status.leader_address:
            return
        request = pb.WorkerHeartbeatRequest(
            node_id=self._node_id,
            running_job_ids=self._worker.running_job_ids(),
            free_slots=self._worker.free_slots(),
            draining=self._is_draining(),
            incarnation=self._worker.incarnation,
        )
        self._in_flight = True
        sent = self._router.send_heartbeat(request, self._interval)
        sent.addCallbacks(self._acknowledged, self._missed)

    def _acknowledged(self, _reply) -> None:
        self._in_flight = False
        self._last_contact = self._clock.seconds()

    def _missed(self, failure) -> None:
        self._in_flight = False
        self.log.debug("Heartbeat to the leader failed: {reason}", reason=failure.getErrorMessage())

    def _check_fence(self) -> None:
        status = self._raft.status()
        now = self._clock.seconds()
        if status.role == "leader" and status.has_quorum:
            self._last_contact = now
        elif now - self._last_contact > self._worker_expiry:
            self._worker.fence()
