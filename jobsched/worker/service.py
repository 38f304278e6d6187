"""WorkerService: runs the jobs the replicated table assigns to this node.

It watches the job table (events come from applied entries), starts an executor run for
each attempt assigned here, kills the run when the job is cancelled, and hands results
to the ResultReporter, which gets them committed.
"""

from __future__ import annotations

from typing import Dict

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from jobsched.interfaces import IExecutor, IWorker
from jobsched.jobs import commands
from jobsched.jobs.model import Job, JobResult, JobSpec, JobStatus
from jobsched.jobs.table import JobTable
from jobsched.worker.reporting import ResultReporter


@implementer(IWorker)
class WorkerService(Service):
    """This node's worker: slots, running attempts, cancel, result reporting."""

    log = Logger()

    def __init__(
        self,
        node_id: int,
        table: JobTable,
        executor: IExecutor,
        reporter: ResultReporter,
        slots: int,
        clock: IReactorTime,
    ) -> None:
        self._node_id = node_id
        self._table = table
        self._executor = executor
        self._reporter = reporter
        self._slots = slots
        self._clock = clock
        self._running: Dict[str, int] = {}

    def running_job_ids(self):
        return list(self._running)

    def free_slots(self) -> int:
        return max(0, self._slots - len(self._running))

    def startService(self):
        super().startService()
        self._table.add_listener(self._on_job_event)
        return self._executor.start()

    def stopService(self):
        super().stopService()
        self._reporter.stop()
        return self._executor.stop()

    def _on_job_event(self, event: str, job: Job) -> None:
        if not self.running:
            return
        if event == "assigned" and job.assigned_worker == self._node_id:
            self._clock.callLater(0, self._start, job.job_id, job.attempts)
        elif event == "cancelled" and job.job_id in self._running:
            self._executor.cancel(job.job_id)

    def _start(self, job_id: str, attempt: int) -> None:
        job = self._table.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.attempts != attempt:
            return
        if job_id in self._running:
            return
        spec = JobSpec(
            job_id=job_id,
            command=job.command,
            image=job.image,
            timeout_seconds=job.timeout_seconds,
            attempt=attempt,
        )
        self._running[job_id] = attempt
        self.log.debug("Running job {job_id} attempt {attempt}", job_id=job_id, attempt=attempt)
        run = self._executor.run(spec)
        run.addErrback(self._executor_failed)
        run.addCallback(self._finished, job_id, attempt)

    def _finished(self, result: JobResult, job_id: str, attempt: int) -> None:
        self._running.pop(job_id, None)
        job = self._table.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.attempts != attempt:
            return  # cancelled (or superseded) while it ran: the result is discarded
        self._reporter.report(commands.status_update(job_id, result, self._node_id, attempt))

    def _executor_failed(self, failure) -> JobResult:
        """An executor bug must not leave the job running forever: fail the attempt."""
        self.log.failure("Executor failed", failure)
        return JobResult(
            status=JobStatus.FAILED,
            exit_code=None,
            output="",
            error=f"Executor error: {failure.getErrorMessage()}",
            output_truncated=False,
            started_at_ms=None,
            completed_at_ms=int(self._clock.seconds() * 1000),
        )
