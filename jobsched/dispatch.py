"""Dispatcher: the leader's loop that places pending jobs on live workers.

It re-plans whenever something could change the answer (a job submitted or finished,
a worker heard from, this node becoming leader) and proposes the Assigner's AssignJob
commands, one planning round in flight at a time so no job is assigned twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from jobsched.interfaces import IDispatcher, IRaftService, IScheduler, IWorker
from jobsched.jobs import commands
from jobsched.jobs.table import JobTable
from jobsched.scheduler import WorkerView

RETRY_DELAY_SECONDS = 0.2


@dataclass
class Heartbeat:
    """The latest word from a remote worker, as the leader received it."""

    received_at: float
    running_job_ids: List[str]
    free_slots: int
    draining: bool


@implementer(IDispatcher)
class Dispatcher(Service):
    """Leader-side placement loop (idle on followers)."""

    log = Logger()

    def __init__(
        self,
        node_id: int,
        raft: IRaftService,
        table: JobTable,
        assigner: IScheduler,
        local_worker: IWorker,
        slots: int,
        is_draining: Callable[[], bool],
        clock: IReactorTime,
        worker_expiry: float = 5.0,
    ) -> None:
        self._node_id = node_id
        self._raft = raft
        self._table = table
        self._assigner = assigner
        self._local_worker = local_worker
        self._slots = slots
        self._is_draining = is_draining
        self._clock = clock
        self._worker_expiry = worker_expiry
        self._heartbeats: Dict[int, Heartbeat] = {}
        self._registering: set = set()
        self._in_flight = False
        self._scheduled = None

    def startService(self) -> None:
        super().startService()
        self._raft.add_observer(self._on_raft_event)
        self._table.add_listener(self._on_job_event)
        self.request_round()

    def stopService(self):
        super().stopService()
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None

    def _on_raft_event(self, event: str) -> None:
        if event == "role":
            if self._raft.status().role != "leader":
                self._heartbeats.clear()
            self.request_round()

    def heartbeat(self, node_id: int, running_job_ids, free_slots: int, draining: bool) -> None:
        """Record a remote worker's heartbeat; its first one registers it (replicated)."""
        was_live = self._is_live(node_id)
        self._heartbeats[node_id] = Heartbeat(
            self._clock.seconds(), list(running_job_ids), free_slots, draining
        )
        if node_id not in self._table.workers() and node_id not in self._registering:
            self._registering.add(node_id)
            registered = self._raft.propose(commands.register_worker(node_id))
            registered.addBoth(self._registered, node_id)
        if not was_live:
            self.request_round()

    def _registered(self, result, node_id: int):
        self._registering.discard(node_id)
        return None  # a failed registration is retried by the next heartbeat

    def is_draining(self, node_id: int) -> bool:
        beat = self._heartbeats.get(node_id)
        return bool(beat and beat.draining)

    def _is_live(self, node_id: int) -> bool:
        beat = self._heartbeats.get(node_id)
        return bool(beat and self._clock.seconds() - beat.received_at <= self._worker_expiry)

    def _on_job_event(self, event: str, job) -> None:
        if event in ("submitted", "finished", "cancelled"):
            self.request_round()

    def request_round(self, delay: float = 0) -> None:
        """Plan again soon (coalesces many requests into one round)."""
        if not self.running:
            return
        if self._scheduled is not None and self._scheduled.active():
            return
        self._scheduled = self._clock.callLater(delay, self._round)

    def workers(self) -> Dict[int, WorkerView]:
        """Workers that may take jobs now: the leader's own worker (live while it leads)
        and every remote worker heard from within the expiry window."""
        views = {
            node_id: WorkerView(
                live=self._is_live(node_id),
                draining=beat.draining,
                slots=beat.free_slots + len(beat.running_job_ids),
            )
            for node_id, beat in self._heartbeats.items()
        }
        views[self._node_id] = WorkerView(
            live=True, draining=self._is_draining(), slots=self._slots
        )
        return views

    def _round(self) -> None:
        self._scheduled = None
        if self._in_flight or self._raft.status().role != "leader":
            return
        assignments = self._assigner.plan(self._table, self.workers())
        if not assignments:
            return
        self._in_flight = True
        proposals = [self._raft.propose(command) for command in assignments]
        done = defer.DeferredList(proposals, consumeErrors=True)
        done.addCallback(self._round_done)

    def _round_done(self, results) -> None:
        self._in_flight = False
        failed = [outcome for ok, outcome in results if not ok]
        if failed:
            self.log.info(
                "{count} assignments not committed ({reason}); retrying",
                count=len(failed),
                reason=failed[0].getErrorMessage(),
            )
            self.request_round(RETRY_DELAY_SECONDS)
        else:
            self.request_round()
