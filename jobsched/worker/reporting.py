"""Hands finished results to the leader, batched, retried until acknowledged."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from jobsched._proto import scheduler_pb2
from jobsched.interfaces import IRouter

RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
FLUSH_POLL_SECONDS = 0.05


class ResultReporter:
    """Queues UpdateJobStatusCommands and delivers them through the router.

    `router.deliver_results(batch)` fires once the batch is committed (the leader's
    own propose, or a ForwardJobStatus acknowledged by the leader). Everything queued
    while a delivery is in flight goes in the next batch; a failed batch is retried
    with back-off and never dropped.
    """

    log = Logger()

    def __init__(
        self,
        router: IRouter,
        clock: IReactorTime,
    ) -> None:
        self._router = router
        self._clock = clock
        self._queued: dict[str, scheduler_pb2.UpdateJobStatusCommand] = {}
        self._in_flight = False
        self._failures = 0
        self._retry_call = None

    @property
    def pending_count(self) -> int:
        return len(self._queued)

    def queued_job_ids(self):
        return list(self._queued)

    def report(self, update: scheduler_pb2.UpdateJobStatusCommand) -> None:
        self._queued[update.job_id] = update
        self._flush_soon(0)

    @defer.inlineCallbacks
    def flush(self, timeout: float):
        """Wait (at most `timeout` seconds) until every queued result is delivered."""
        deadline = self._clock.seconds() + timeout
        while self._queued and self._clock.seconds() < deadline:
            self._flush_soon(0)
            yield task.deferLater(self._clock, FLUSH_POLL_SECONDS, lambda: None)

    def stop(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None

    def _flush_soon(self, delay: float) -> None:
        if self._in_flight or (self._retry_call is not None and self._retry_call.active()):
            return
        self._retry_call = self._clock.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._retry_call = None
        if self._in_flight or not self._queued:
            return
        batch = list(self._queued.values())
        self._in_flight = True
        delivered = defer.maybeDeferred(self._router.deliver_results, batch)
        delivered.addCallbacks(self._delivered, self._failed, callbackArgs=(batch,))

    def _delivered(self, _result, batch) -> None:
        self._in_flight = False
        self._failures = 0
        for update in batch:
            if self._queued.get(update.job_id) is update:
                del self._queued[update.job_id]
        if self._queued:
            self._flush_soon(0)

    def _failed(self, failure) -> None:
        self._in_flight = False
        delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
        self._failures += 1
        self.log.info(
            "Delivering {count} job results failed ({reason}); retrying in {delay}s",
            count=len(self._queued),
            reason=failure.getErrorMessage(),
            delay=delay,
        )
        self._flush_soon(delay)
