"""Leader-side placement: which pending job goes to which worker now.

The leader asks `Assigner.plan` whenever the answer could have changed and proposes the
AssignJob commands it returns. Running counts come from the replicated job table, so a
new leader places jobs correctly without any state of its own.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass

from zope.interface import implementer

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


@implementer(IScheduler)
class Assigner:
    """FIFO placement on the least-loaded eligible worker (ties: lowest id)."""

    def plan(self, table: IJobTable, workers: Mapping[int, WorkerView], now_ms: int) -> list[bytes]:
        """AssignJob entries, made at `now_ms`, for as many pending jobs as there are
        free slots.

        Pure: reads the table, changes nothing. Costs O(W + A log W) for W workers and
        A assignments; only the pending jobs that can be placed are read.
        """
        running = table.running_counts()
        heap = []
        free_slots = 0
        for worker_id, view in workers.items():
            count = running.get(worker_id, 0)
            if view.live and not view.draining and count < view.slots:
                heap.append((count, worker_id))
                free_slots += view.slots - count
        if not heap:
            return []
        heapq.heapify(heap)
        plan = []
        for job in table.pending_jobs(limit=free_slots):
            count, worker_id = heapq.heappop(heap)
            plan.append(
                commands.assign_job(
                    job.job_id,
                    worker_id,
                    job.attempts + 1,
                    workers[worker_id].incarnation,
                    now_ms,
                )
            )
            if count + 1 < workers[worker_id].slots:
                heapq.heappush(heap, (count + 1, worker_id))
        return plan
