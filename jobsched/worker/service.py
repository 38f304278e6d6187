"""WorkerService: runs the jobs the replicated table assigns to this node.

It watches the job table (events come from applied entries), starts an executor run for
each attempt assigned to this process life, kills the run when the job is cancelled,
and hands results to the ResultReporter, which gets them committed. Assignments made to
an earlier life of this node (before a restart) are reported failed, `node restarted`,
never run again; a job that finished meanwhile ignores that report.

Each attempt starts at most once in a process life: whatever shows it again (a restored
snapshot, a replayed entry, the same attempt number assigned anew) while its result is
on the way to the leader finds it in `_taken` and leaves it alone.
"""

from __future__ import annotations

import dataclasses
import random

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from jobsched.interfaces import IExecutor, IJobTable, IWorker
from jobsched.jobs import commands
from jobsched.jobs.model import Job, JobResult, JobSpec, JobStatus
from jobsched.metrics import NodeMetrics
from jobsched.worker.reporting import ResultReporter

NODE_RESTARTED = "node restarted"
NODE_STOPPING = "node shutting down"
POLL_SECONDS = 0.1
KILL_WAIT_SECONDS = 5.0


@implementer(IWorker)
class WorkerService(Service):
    """This node's worker: slots, running attempts, cancel, fencing, result reporting."""

    log = Logger()

    def __init__(
        self,
        node_id: int,
        table: IJobTable,
        executor: IExecutor,
        reporter: ResultReporter,
        slots: int,
        clock: IReactorTime,
        incarnation: int = 0,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._node_id = node_id
        self._metrics = metrics if metrics is not None else NodeMetrics()
        self._table = table
        self._executor = executor
        self._reporter = reporter
        self._slots = slots
        self._clock = clock
        self.incarnation = incarnation or random.SystemRandom().randrange(1, 2**63)
        self._running: dict[str, int] = {}
        # job id -> the highest attempt this process life has taken (run or reported)
        self._taken: dict[str, int] = {}
        self._fenced: set[str] = set()
        self._killed_for_stop: set[str] = set()

    def running_job_ids(self):
        """Jobs running here, about to start here (assigned by an entry applied, taken
        in the next reactor turn) or finished here with results not yet committed: the
        leader must not take any of those back."""
        listed = dict.fromkeys(self._running)
        listed.update(dict.fromkeys(self._reporter.queued_job_ids()))
        for job in self._table.jobs_running_on(self._node_id):
            if self._taken.get(job.job_id, 0) < job.attempts:
                listed[job.job_id] = None
        return list(listed)

    @property
    def slots(self) -> int:
        return self._slots

    def free_slots(self) -> int:
        """Slots left; a result still being delivered holds its slot."""
        return max(0, self._slots - len(self.running_job_ids()))

    @defer.inlineCallbacks
    def startService(self):
        super().startService()
        yield self._executor.start()
        leftovers = yield self._executor.remove_leftovers()
        if leftovers:
            self.log.warn(
                "Removed {count} jobs left running by this node's previous life: {ids}",
                count=len(leftovers),
                ids=", ".join(leftovers),
            )
        self._table.add_listener(self._on_job_event)
        self._adopt_assignments()

    def stopService(self):
        super().stopService()
        self._reporter.stop()
        return self._executor.stop()

    def fence(self) -> None:
        """This worker lost the leader long enough for the leader to give its jobs to
        others: kill every running job (their results are discarded), and never start
        the attempts assigned to this process life that have not started yet (an
        assignment applied after a pause may have been taken back already; the leader
        takes back what this worker does not run). Those of an earlier life are still
        reported failed as they are taken."""
        for job in self._table.jobs_running_on(self._node_id):
            if job.worker_incarnation == self.incarnation:
                self._taken[job.job_id] = max(self._taken.get(job.job_id, 0), job.attempts)
        if not self._running:
            return
        self.log.warn(
            "Lost contact with the leader: killing {count} running jobs (self-fencing)",
            count=len(self._running),
        )
        for job_id in list(self._running):
            self._kill(job_id)

    @defer.inlineCallbacks
    def wind_down(self, grace_seconds: float):
        """Let running jobs finish for up to `grace_seconds`, then kill the rest and
        report them failed (`node shutting down`)."""
        deadline = self._clock.seconds() + grace_seconds
        while self._running and self._clock.seconds() < deadline:
            yield task.deferLater(self._clock, POLL_SECONDS, lambda: None)
        if not self._running:
            return
        self.log.warn("Killing {count} jobs still running at shutdown", count=len(self._running))
        for job_id in list(self._running):
            self._killed_for_stop.add(job_id)
            self._executor.cancel(job_id)
        deadline = self._clock.seconds() + KILL_WAIT_SECONDS
        while self._running and self._clock.seconds() < deadline:
            yield task.deferLater(self._clock, POLL_SECONDS, lambda: None)

    def _on_job_event(self, event: str, job: Job) -> None:
        if not self.running:
            return
        if event == "restored":
            for job_id in list(self._taken):
                self._forget_if_done(job_id)
            self._adopt_assignments()
            return
        attempt = self._running.get(job.job_id)
        if attempt is not None and not (
            job.status is JobStatus.RUNNING
            and job.assigned_worker == self._node_id
            and job.attempts == attempt
        ):
            self._kill(job.job_id)  # cancelled, requeued or reassigned: not ours any more
        if event == "assigned" and job.assigned_worker == self._node_id:
            self._clock.callLater(0, self._take, job.job_id, job.attempts)
        elif job.status.is_terminal:
            self._forget_if_done(job.job_id)

    def _forget_if_done(self, job_id: str) -> None:
        """Drop the memory of a job's attempts once no attempt of it can come back."""
        job = self._table.get(job_id)
        if job_id not in self._running and (job is None or job.status.is_terminal):
            self._taken.pop(job_id, None)

    def _kill(self, job_id: str) -> None:
        """Kill the run of `job_id` here; its result is discarded."""
        if job_id not in self._fenced:
            self._fenced.add(job_id)
            self._executor.cancel(job_id)

    def _adopt_assignments(self) -> None:
        """Look at every job the table says runs here (after start or a snapshot)."""
        for job in self._table.jobs_running_on(self._node_id):
            self._take(job.job_id, job.attempts)

    def _take(self, job_id: str, attempt: int) -> None:
        job = self._table.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.attempts != attempt:
            return
        if job.assigned_worker != self._node_id or job_id in self._running:
            return
        if self._taken.get(job_id, 0) >= attempt:
            return  # already run (or reported) in this process life
        self._taken[job_id] = attempt
        if job.worker_incarnation != self.incarnation:
            self._report(job_id, attempt, self._failure(NODE_RESTARTED))
            return
        spec = JobSpec(
            job_id=job_id,
            command=job.command,
            image=job.image,
            timeout_seconds=job.timeout_seconds,
            attempt=attempt,
        )
        self._running[job_id] = attempt
        waited_ms = self._clock.seconds() * 1000 - job.created_at_ms
        self._metrics.job_queue_wait_seconds.observe(max(0.0, waited_ms / 1000))
        run = self._executor.run(spec)
        run.addErrback(self._executor_failed)
        run.addCallback(self._finished, job_id, attempt)

    def _finished(self, result: JobResult, job_id: str, attempt: int) -> None:
        self._running.pop(job_id, None)
        if result.started_at_ms is not None:
            ran_ms = result.completed_at_ms - result.started_at_ms
            self._metrics.job_run_seconds.observe(max(0.0, ran_ms / 1000))
        if job_id in self._fenced:
            self._fenced.discard(job_id)
            self._killed_for_stop.discard(job_id)
        else:
            if job_id in self._killed_for_stop:
                self._killed_for_stop.discard(job_id)
                result = dataclasses.replace(
                    result,
                    status=JobStatus.FAILED,
                    error=NODE_STOPPING,
                    exit_code=None,
                    timed_out=False,
                )
            self._report(job_id, attempt, result)
        job = self._table.get(job_id)
        if job is not None and job.attempts != attempt:
            self._take(job_id, job.attempts)  # reassigned here while this attempt died
        self._forget_if_done(job_id)

    def _report(self, job_id: str, attempt: int, result: JobResult) -> None:
        job = self._table.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.attempts != attempt:
            return  # cancelled (or superseded) while it ran: the result is discarded
        self._reporter.report(commands.status_update(job_id, result, self._node_id, attempt))

    def _failure(self, error: str) -> JobResult:
        return JobResult(
            status=JobStatus.FAILED,
            exit_code=None,
            output="",
            error=error,
            output_truncated=False,
            started_at_ms=None,
            completed_at_ms=int(self._clock.seconds() * 1000),
        )

    def _executor_failed(self, failure) -> JobResult:
        """An executor bug must not leave the job running forever: fail the attempt."""
        self.log.failure("Executor failed", failure)
        return self._failure(f"Executor error: {failure.getErrorMessage()}")
