"""HeartbeatSender: tells the leader, every 2 s, that this node's worker is alive, and
keeps the worker's lease (docs/reliability.md, "Fencing"): a follower's worker may run
jobs until the send time of its latest acknowledged heartbeat plus the worker expiry,
the leader's own worker until it last confirmed a quorum plus the worker expiry. When
the lease runs out the worker fences itself (kills its jobs), since the leader may
then give those jobs to others; the fence keeper enforces the same lease from outside
in case this process is paused or dead."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from jobsched._proto import scheduler_pb2 as pb
from jobsched.interfaces import IFence, IHeartbeatSender, IRaftService, IRouter, IWorker
from jobsched.jobs import commands

HEARTBEAT_INTERVAL_SECONDS = 2.0
BEATS_PER_EXPIRY = 2.5
LEASE_CHECK_SECONDS = 0.1


def beat_interval(worker_expiry: float) -> float:
    """Every 2 s, or more often when the expiry is short, so that a lease always has
    a beat or two to be renewed by before it runs out."""
    return min(HEARTBEAT_INTERVAL_SECONDS, worker_expiry / BEATS_PER_EXPIRY)


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
        fence: IFence,
        router: IRouter,
        is_draining: Callable[[], bool],
        clock,
        worker_expiry: float,
    ) -> None:
        self._node_id = node_id
        self._raft = raft
        self._worker = worker
        self._fence = fence
        self._router = router
        self._is_draining = is_draining
        self._clock = clock
        self._worker_expiry = worker_expiry
        self._interval = beat_interval(worker_expiry)
        self._beats = task.LoopingCall(self.beat)
        self._beats.clock = clock
        self._lease_check = task.LoopingCall(self._check_lease)
        self._lease_check.clock = clock
        self._in_flight = False

    def startService(self) -> None:
        super().startService()
        self._raft.add_observer(self._on_raft_event)
        self._beats.start(self._interval, now=False)
        self._lease_check.start(LEASE_CHECK_SECONDS, now=False)

    def stopService(self):
        super().stopService()
        for loop in (self._beats, self._lease_check):
            if loop.running:
                loop.stop()

    def _on_raft_event(self, event: str) -> None:
        if not self.running:
            return
        # Entries applied may assign this worker a job: renew the lease before it starts.
        self._check_lease()
        if event == "role":
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
            applied_index=status.last_applied,
            entry_forms=commands.ENTRY_FORMS,
        )
        self._in_flight = True
        sent_at = self._clock.seconds()
        sent = self._router.send_heartbeat(request, self._interval)
        sent.addCallbacks(self._acknowledged, self._missed, callbackArgs=(sent_at,))

    def _acknowledged(self, _reply, sent_at: float) -> None:
        """The leader heard us at `sent_at` or later, and counts our silence from then."""
        self._in_flight = False
        self._fence.extend_lease(sent_at + self._worker_expiry)

    def _missed(self, failure) -> None:
        self._in_flight = False
        self.log.debug("Heartbeat to the leader failed: {reason}", reason=failure.getErrorMessage())

    def _check_lease(self) -> None:
        if self._raft.is_leader():  # on every applied batch: status() only when leading
            confirmed_at = self._raft.status().quorum_confirmed_at
            if confirmed_at is not None:
                self._fence.extend_lease(confirmed_at + self._worker_expiry)
        if self._fence.lease_expired():
            self._worker.fence()
