"""Dispatcher: the leader's loop that places pending jobs on live workers and takes
jobs back from lost ones.

It re-plans whenever something could change the answer (a job submitted or finished,
a worker heard from, this node becoming leader) and proposes the Assigner's AssignJob
commands, one planning round in flight at a time so no job is assigned twice. Once a
second it looks for running jobs whose worker has been silent for `worker_expiry`
plus the fence margin (by then the worker's fence has killed them: docs/reliability.md)
and proposes their requeue (or failure, when no attempt is left). Silence is the
worker's, not this node's: time during which this process did not run (it was paused,
or its reactor stalled) does not count.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from jobsched import errors
from jobsched.interfaces import IDispatcher, IJobTable, IRaftService, IScheduler, IWorker
from jobsched.jobs import commands
from jobsched.registry import WorkerRegistry
from jobsched.scheduler import WorkerView
from jobsched.worker.fence import FENCE_MARGIN_SECONDS

RETRY_DELAY_SECONDS = 0.2
LOST_WORKER_CHECK_SECONDS = 1.0
# The lost-worker check coming this much later than due means this node did not run.
PAUSE_TOLERANCE_SECONDS = 0.5


@implementer(IDispatcher)
class Dispatcher(Service):
    """Leader-side placement and lost-worker loop (idle on followers)."""

    log = Logger()

    def __init__(
        self,
        node_id: int,
        raft: IRaftService,
        table: IJobTable,
        assigner: IScheduler,
        local_worker: IWorker,
        registry: WorkerRegistry,
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
        self._registry = registry
        self._registering: set[int] = set()
        self._requeueing: set[str] = set()
        self._missing: dict[tuple, float] = {}  # (job id, attempt) -> first seen missing
        # (job id, attempt) -> a log index its assignment is at or below
        self._assigned_by: dict[tuple, int] = {}
        self._leading_since = None
        self._last_check = 0.0
        self._in_flight = False
        self._scheduled = None
        self._lost_check = task.LoopingCall(self._requeue_lost_jobs)
        self._lost_check.clock = clock

    def startService(self) -> None:
        super().startService()
        self._last_check = self._clock.seconds()
        if self._is_leader():
            self._leading_since = self._last_check
        self._raft.add_observer(self._on_raft_event)
        self._table.add_listener(self._on_job_event)
        self._lost_check.start(LOST_WORKER_CHECK_SECONDS, now=False)
        self.request_round()

    def stopService(self):
        super().stopService()
        if self._lost_check.running:
            self._lost_check.stop()
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None

    def _is_leader(self) -> bool:
        return self._raft.status().role == "leader"

    def _on_raft_event(self, event: str) -> None:
        if event != "role":
            return
        if self._is_leader():
            if self._leading_since is None:
                self._leading_since = self._clock.seconds()
        else:
            self._leading_since = None
            self._registry.forget_all()
            self._missing.clear()
            self._assigned_by.clear()
        self.request_round()

    def _on_job_event(self, event: str, job) -> None:
        if event in ("submitted", "finished", "cancelled", "requeued", "restored"):
            self.request_round()

    # ------------------------------------------------------------------ workers

    def heartbeat(
        self,
        node_id: int,
        running_job_ids,
        free_slots: int,
        draining: bool,
        incarnation: int,
        applied_index: int = 0,
    ) -> None:
        """Record a remote worker's heartbeat; its first one registers it (replicated).
        Only the leader takes heartbeats (NotLeader elsewhere)."""
        status = self._raft.status()
        if status.role != "leader":
            raise errors.NotLeader(status.leader_address)
        was_live = self._registry.record(
            node_id, running_job_ids, free_slots, draining, incarnation, applied_index
        )
        if node_id not in self._table.workers() and node_id not in self._registering:
            self._registering.add(node_id)
            registered = self._raft.propose(commands.register_worker(node_id))
            registered.addBoth(self._registered, node_id)
        if not was_live:
            self.request_round()

    def _registered(self, _result, node_id: int) -> None:
        self._registering.discard(node_id)  # a failure is retried by the next heartbeat

    def workers(self) -> dict[int, WorkerView]:
        """Workers that may take jobs now: the leader's own worker (live while it leads)
        and every remote worker heard from within the expiry window."""
        views = self._registry.views()
        views[self._node_id] = WorkerView(
            live=True,
            draining=self._is_draining(),
            slots=self._slots,
            incarnation=self._local_worker.incarnation,
        )
        return views

    # ------------------------------------------------------------------ placement

    def request_round(self, delay: float = 0) -> None:
        """Plan again soon (coalesces many requests into one round)."""
        if not self.running:
            return
        if self._scheduled is not None and self._scheduled.active():
            return
        self._scheduled = self._clock.callLater(delay, self._round)

    def _round(self) -> None:
        self._scheduled = None
        if self._in_flight or not self._is_leader():
            return
        assignments = self._assigner.plan(
            self._table, self.workers(), int(self._clock.seconds() * 1000)
        )
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

    # ------------------------------------------------------------------ lost workers

    def _silent_for(self, worker_id: int, now: float) -> float:
        beat = self._registry.latest(worker_id)
        heard = max(self._leading_since, beat.received_at if beat else self._leading_since)
        return now - heard

    def _reported_running(self, worker_id: int, assigned_by: int):
        """Job ids the worker says it runs (or holds results of), or None if it has not
        said since it applied the log up to `assigned_by`: a beat sent before the worker
        knew of an assignment cannot tell that the job is missing there."""
        if worker_id == self._node_id:
            return set(self._local_worker.running_job_ids())
        beat = self._registry.latest(worker_id)
        if beat is None or beat.applied_index < assigned_by:
            return None
        return set(beat.running_job_ids)

    def _excuse_own_pause(self, now: float) -> None:
        """This check came late: for that long this node did not run, and heard nobody.
        Move every "heard from" time forward by as much (no further than now)."""
        late = now - self._last_check - LOST_WORKER_CHECK_SECONDS
        self._last_check = now
        if late <= PAUSE_TOLERANCE_SECONDS:
            return
        self.log.info(
            "This node did not run for {seconds:.1f}s: not counted as silence of workers",
            seconds=late,
        )
        self._registry.excuse(late)
        if self._leading_since is not None:
            self._leading_since = min(now, self._leading_since + late)
        self._missing = {attempt: min(now, t + late) for attempt, t in self._missing.items()}

    def _requeue_lost_jobs(self) -> None:
        """Take back the running jobs of workers silent for `worker_expiry` plus the
        fence margin, and jobs a live worker has not been running for `worker_expiry`
        (e.g. killed by fencing while the worker and this leader were briefly apart),
        as told by beats sent after it had applied their assignment."""
        now = self._clock.seconds()
        self._excuse_own_pause(now)
        if not self._is_leader() or self._leading_since is None:
            return
        still_missing = {}
        lost_after = self._worker_expiry + FENCE_MARGIN_SECONDS
        commit_index = self._raft.status().commit_index
        assigned_by = {}
        for worker_id, jobs in self._table.running_by_worker().items():
            silent = worker_id != self._node_id and self._silent_for(worker_id, now) > lost_after
            for job in jobs:
                attempt = (job.job_id, job.attempts)
                # Its assignment was committed when this leader first saw it running.
                assigned_by[attempt] = self._assigned_by.get(attempt, commit_index)
                if not silent:
                    reported = self._reported_running(worker_id, assigned_by[attempt])
                    if reported is None or job.job_id in reported:
                        continue
                    missing_since = self._missing.get(attempt, now)
                    still_missing[attempt] = missing_since
                    if now - missing_since <= self._worker_expiry:
                        continue
                self._requeue(job, worker_id, now)
        self._missing = still_missing
        self._assigned_by = assigned_by

    def _requeue(self, job, worker_id: int, now: float) -> None:
        if job.job_id in self._requeueing:
            return
        self.log.info(
            "Worker {worker} lost job {job_id} (attempt {attempt}): taking it back",
            worker=worker_id,
            job_id=job.job_id,
            attempt=job.attempts,
        )
        self._requeueing.add(job.job_id)
        requeued = self._raft.propose(
            commands.requeue_job(
                job.job_id, job.attempts, f"worker {worker_id} lost", int(now * 1000)
            )
        )
        requeued.addBoth(self._requeue_done, job.job_id)

    def _requeue_done(self, _result, job_id: str) -> None:
        self._requeueing.discard(job_id)
