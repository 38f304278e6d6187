"""Dispatcher: the leader's loop that places pending jobs on live workers and takes
jobs back from lost ones.

It re-plans whenever something could change the answer (a job submitted or finished,
a worker heard from, this node becoming leader) and proposes the Assigner's assignments
in one AssignJobs entry, one planning round in flight at a time. Jobs being submitted
while no older job waits are placed at once (`place_new`) and assigned in their submit
entry; results being proposed free their slots at once (`results_proposed`), and the
next pending jobs are assigned in the results' own entry. Slots promised by a proposal
not yet applied are reserved and the jobs it assigns left out of other plans, so no
path gives a worker more jobs than it has slots or assigns a job twice. Once a
second it looks for running jobs whose worker has been silent for `worker_expiry`
plus the fence margin (by then the worker's fence has killed them: docs/reliability.md)
and proposes their requeue (or failure, when no attempt is left). Silence is the
worker's, not this node's: time during which this process did not run (it was paused,
or its reactor stalled) does not count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from jobsched import errors
from jobsched.interfaces import IDispatcher, IJobTable, IRaftService, IScheduler, IWorker
from jobsched.jobs import commands
from jobsched.jobs.model import JobStatus
from jobsched.raft.service import propose_each
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
        self._raising_forms = False
        self._requeueing: set[str] = set()
        self._missing: dict[tuple, float] = {}  # (job id, attempt) -> first seen missing
        # (job id, attempt) -> a log index its assignment is at or below
        self._assigned_by: dict[tuple, int] = {}
        self._leading_since = None
        self._last_check = 0.0
        self._in_flight = False
        self._scheduled = None
        # worker -> slots freed by results being proposed, less the slots promised by
        # proposals not applied yet (what the table's running counts do not show yet)
        self._slot_changes: Counter[int] = Counter()
        # (worker, job id, attempt) -> proposals carrying that attempt's result (one
        # attempt frees one slot, however many proposals carry its result)
        self._finishing: Counter[tuple] = Counter()
        self._assigning: set[str] = set()  # jobs those proposals assign
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
        return self._raft.is_leader()

    def _on_raft_event(self, event: str) -> None:
        if event != "role":
            return
        if self._is_leader():
            if self._leading_since is None:
                self._leading_since = self._clock.seconds()
            self._raise_entry_forms()  # a cluster of one need not wait for heartbeats
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
        entry_forms: int = 0,
    ) -> None:
        """Record a remote worker's heartbeat; its first one registers it (replicated).
        Only the leader takes heartbeats (NotLeader elsewhere)."""
        status = self._raft.status()
        if status.role != "leader":
            raise errors.NotLeader(status.leader_address)
        was_live = self._registry.record(
            node_id, running_job_ids, free_slots, draining, incarnation, applied_index, entry_forms
        )
        if node_id not in self._table.workers() and node_id not in self._registering:
            self._registering.add(node_id)
            registered = self._raft.propose(commands.register_worker(node_id))
            registered.addBoth(self._registered, node_id)
        self._raise_entry_forms()
        if not was_live:
            self.request_round()

    def _registered(self, _result, node_id: int) -> None:
        self._registering.discard(node_id)  # a failure is retried by the next heartbeat

    def _batched(self) -> bool:
        """Whether the cluster writes the batched entry forms (commands.BATCHED_FORMS)."""
        return self._table.entry_forms() >= commands.BATCHED_FORMS

    def _raise_entry_forms(self) -> None:
        """Once every node has said it applies this version's entry forms, commit that
        the cluster writes them (a failure is retried at the next heartbeat)."""
        if (
            self._raising_forms
            or self._table.entry_forms() >= commands.ENTRY_FORMS
            or not self._registry.every_node_applies(commands.ENTRY_FORMS)
        ):
            return
        self._raising_forms = True
        raised = self._raft.propose(commands.entry_forms(commands.ENTRY_FORMS))
        raised.addBoth(self._forms_raised)

    def _forms_raised(self, _result) -> None:
        self._raising_forms = False

    def workers(self) -> dict[int, WorkerView]:
        """Workers that may take jobs now: the leader's own worker (live while it leads)
        and every remote worker heard from within the expiry window."""
        views = self._registry.views(self._slot_changes)
        views[self._node_id] = WorkerView(
            live=True,
            draining=self._is_draining(),
            slots=self._slots + self._slot_changes[self._node_id],
            incarnation=self._local_worker.incarnation,
            local=True,
        )
        return views

    def results_proposed(self, updates, now_ms: int) -> tuple[list, Callable]:
        """Results (UpdateJobStatusCommands) of running attempts are being proposed:
        their slots count as free from now on, and pending jobs are placed on them at
        once, to be assigned in the results' own entry (a slot turns over with one
        commit). Returns those AssignJobCommands (made at `now_ms`) and the release, to
        be called with the entry's outcome once it is applied or refused."""
        finishing = []
        for update in updates:
            job = self._table.get(update.job_id)
            if (
                job is not None
                and job.status is JobStatus.RUNNING
                and job.attempts == update.attempt
                and job.assigned_worker == update.executed_by
            ):
                attempt = (job.assigned_worker, job.job_id, job.attempts)
                finishing.append(attempt)
                self._finishing[attempt] += 1
                if self._finishing[attempt] == 1:
                    self._slot_changes[job.assigned_worker] += 1
        assignments = []
        if finishing and self.running and self._is_leader():
            if self._batched():
                assignments = self._assigner.plan(
                    self._table, self.workers(), now_ms, self._assigning
                )
            else:  # a node might not apply assignments carried in a result entry
                self.request_round()
        release_assignments = self._hold(assignments)

        def release(outcome):
            for attempt in finishing:
                self._finishing[attempt] -= 1
                if self._finishing[attempt] <= 0:
                    del self._finishing[attempt]
                    self._slot_changes[attempt[0]] -= 1
            return release_assignments(outcome)

        return assignments, release

    def _reserve(self, worker_ids) -> Callable[[object], object]:
        """Hold a slot on each worker until the returned release is called (with the
        proposal's outcome, which it passes on)."""
        self._slot_changes.subtract(worker_ids)

        def release(outcome):
            self._slot_changes.update(worker_ids)
            return outcome

        return release

    def _hold(self, assignments) -> Callable[[object], object]:
        """Reserve the slots of `assignments` (AssignJobCommands being proposed) and
        keep their jobs out of other plans until the returned release is called."""
        job_ids = {assignment.job_id for assignment in assignments}
        self._assigning |= job_ids
        release_slots = self._reserve([assignment.worker_id for assignment in assignments])

        def release(outcome):
            self._assigning -= job_ids
            return release_slots(outcome)

        return release

    def place_new(self, jobs, now_ms: int):
        """Assign jobs being submitted (SubmitJobCommands) in their own entry when no
        older job waits: sets `assignment` on as many as have a free slot, first job
        first. Returns the release of their reservations, to be called once the entry
        is committed or refused, or None when none was placed."""
        if (
            not self.running
            or not self._is_leader()
            or self._table.count(JobStatus.PENDING)
            or not self._batched()
        ):
            return None
        views = self.workers()
        places = self._assigner.place(self._table, views, len(jobs))
        if not places:
            return None
        for job, worker_id in zip(jobs, places, strict=False):
            job.assignment.CopyFrom(
                commands.assignment(job.job_id, worker_id, 1, views[worker_id].incarnation, now_ms)
            )
        return self._reserve(places)

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
            self._table, self.workers(), int(self._clock.seconds() * 1000), self._assigning
        )
        if not assignments:
            return
        self._in_flight = True
        proposal = self._propose_assignments(assignments)
        proposal.addBoth(self._hold(assignments))
        proposal.addCallbacks(self._round_done, self._round_failed, errbackArgs=(len(assignments),))

    def _propose_assignments(self, assignments):
        """One AssignJobs entry, or while a node might not apply those, an AssignJob
        entry each (the form every version applies)."""
        if self._batched():
            return self._raft.propose(commands.assign_jobs(assignments))
        return propose_each(
            self._raft, [commands.entry(assign_job=assignment) for assignment in assignments]
        )

    def _round_done(self, _results) -> None:
        self._in_flight = False
        self.request_round()

    def _round_failed(self, failure, count: int) -> None:
        self._in_flight = False
        self.log.info(
            "{count} assignments not committed ({reason}); retrying",
            count=count,
            reason=failure.getErrorMessage(),
        )
        self.request_round(RETRY_DELAY_SECONDS)

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
