"""Leader-side placement: which pending job goes to which worker now.

The leader asks `Assigner.plan` whenever the answer could have changed and proposes the
assignments it returns in one AssignJobs entry, or in the entry of the results that
free their slots; `Assigner.place` picks workers for jobs being submitted while a slot
is free, so that they are assigned in their submit entry.
Running counts come from the replicated job table, so a new leader places jobs
correctly without any state of its own.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Set
from dataclasses import dataclass

from zope.interface import implementer

from jobsched._proto import scheduler_pb2
from jobsched.interfaces import IJobTable, IScheduler
from jobsched.jobs import commands


@dataclass(frozen=True)
class WorkerView:
    """What the leader knows of one worker: heartbeats arriving, draining, capacity,
    and which process life of it the heartbeats come from."""

    live: bool
    draining: bool
    slots: int
    incarnation: int = 0
    local: bool = False  # the leader's own worker: preferred among equally loaded ones


@implementer(IScheduler)
class Assigner:
    """FIFO placement on the least-loaded eligible worker (ties: the leader's own
    worker, whose results need no forwarding; then the lowest id)."""

    def plan(
        self,
        table: IJobTable,
        workers: Mapping[int, WorkerView],
        now_ms: int,
        being_assigned: Set[str] = frozenset(),
    ) -> list[scheduler_pb2.AssignJobCommand]:
        """Assignments, made at `now_ms`, for as many pending jobs as there are free
        slots (oldest first), leaving out the jobs `being_assigned` by proposals not
        yet applied.

        Pure: reads the table, changes nothing. Costs O(W + A log W) for W workers and
        A assignments; only the pending jobs that can be placed are read.
        """
        heap, free_slots = _free_workers(table, workers)
        if not heap:
            return []
        jobs = table.pending_jobs(limit=free_slots + len(being_assigned))
        if being_assigned:
            jobs = [job for job in jobs if job.job_id not in being_assigned][:free_slots]
        places = _take(heap, workers, len(jobs))
        return [
            commands.assignment(
                job.job_id, worker_id, job.attempts + 1, workers[worker_id].incarnation, now_ms
            )
            for job, worker_id in zip(jobs, places, strict=True)
        ]

    def place(self, table: IJobTable, workers: Mapping[int, WorkerView], count: int) -> list[int]:
        """Workers for up to `count` new jobs, first job first (fewer when slots run
        out): the same least-loaded choice as `plan`."""
        heap, free_slots = _free_workers(table, workers)
        return _take(heap, workers, min(count, free_slots))


def _free_workers(table: IJobTable, workers: Mapping[int, WorkerView]):
    """A heap of (running count, worker id) of the workers with a free slot, and how
    many slots are free in all."""
    running = table.running_counts()
    heap = []
    free_slots = 0
    for worker_id, view in workers.items():
        count = running.get(worker_id, 0)
        if view.live and not view.draining and count < view.slots:
            heap.append((count, not view.local, worker_id))
            free_slots += view.slots - count
    heapq.heapify(heap)
    return heap, free_slots


def _take(heap: list, workers: Mapping[int, WorkerView], count: int) -> list[int]:
    places = []
    while heap and len(places) < count:
        running, remote, worker_id = heapq.heappop(heap)
        places.append(worker_id)
        if running + 1 < workers[worker_id].slots:
            heapq.heappush(heap, (running + 1, remote, worker_id))
    return places
