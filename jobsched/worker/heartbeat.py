"""HeartbeatSender: tells the leader, every 2 s, that this node's worker is alive."""

from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger

from jobsched._proto import scheduler_pb2 as pb
from jobsched.interfaces import IRaftService, IWorker
from jobsched.leader_client import LeaderClient

HEARTBEAT_INTERVAL_SECONDS = 2.0


class HeartbeatSender(Service):
    """Sends WorkerHeartbeat to the leader while this node follows (a leader's own
    worker needs none). A missed beat is simply sent again next time."""

    log = Logger()

    def __init__(
        self,
        node_id: int,
        raft: IRaftService,
        worker: IWorker,
        leader: LeaderClient,
        is_draining: Callable[[], bool],
        clock,
        interval: float = HEARTBEAT_INTERVAL_SECONDS,
    ) -> None:
        self._node_id = node_id
        self._raft = raft
        self._worker = worker
        self._leader = leader
        self._is_draining = is_draining
        self._interval = interval
        self._loop = task.LoopingCall(self.beat)
        self._loop.clock = clock
        self._in_flight = False

    def startService(self) -> None:
        super().startService()
        self._raft.add_observer(self._on_raft_event)
        self._loop.start(self._interval, now=False)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()

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
        )
        self._in_flight = True
        sent = self._leader.internal("WorkerHeartbeat", request, timeout=self._interval)
        sent.addErrback(lambda failure: self.log.debug(
            "Heartbeat to the leader failed: {reason}", reason=failure.getErrorMessage()))
        sent.addBoth(self._sent)

    def _sent(self, _result) -> None:
        self._in_flight = False
