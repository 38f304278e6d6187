"""Assigner: FIFO placement on the least-loaded live, non-draining worker."""

from __future__ import annotations

import itertools
import json

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2
from jobsched.interfaces import IScheduler
from jobsched.jobs import commands
from jobsched.jobs.table import JobTable
from jobsched.scheduler import Assigner, WorkerView
from tests.unit.snapshot_forms import as_format_1

_index = itertools.count(1)
NOW_MS = 1_700_000_000_000


def table_with(pending=0, running=None):
    """A table with `running` = {worker: n} running jobs, then `pending` pending ones."""
    table = JobTable()
    names = (f"job{n:05d}" for n in itertools.count())
    for worker, count in (running or {}).items():
        for _ in range(count):
            name = next(names)
            table.apply(next(_index), commands.submit_job(name, "true", 1))
            table.apply(next(_index), commands.assign_job(name, worker, 1))
    for _ in range(pending):
        table.apply(next(_index), commands.submit_job(next(names), "true", 1))
    return table


def live(slots=4):
    return WorkerView(live=True, draining=False, slots=slots)


def plan_for(table, workers, now_ms=NOW_MS):
    return Assigner().plan(table, workers, now_ms)


def decoded(plan):
    """The AssignJob commands of a plan."""
    return list(plan)


def placements(plan):
    return [(c.job_id, c.worker_id) for c in decoded(plan)]


def workers_of(plan):
    return [worker for _, worker in placements(plan)]


class AssignerTests(unittest.TestCase):
    """Which pending jobs go to which workers, and in what order."""

    def test_assigner_provides_scheduler(self):
        self.assertTrue(verifyObject(IScheduler, Assigner()))

    def test_nothing_to_do(self):
        self.assertEqual(plan_for(table_with(), {1: live()}), [])
        self.assertEqual(plan_for(table_with(pending=3), {}), [])

    def test_pending_jobs_go_out_in_submission_order(self):
        table = table_with(pending=5)
        plan = plan_for(table, {1: live(slots=3)})
        self.assertEqual(placements(plan), [("job00000", 1), ("job00001", 1), ("job00002", 1)])

    def test_each_job_goes_to_worker_with_fewest_running(self):
        table = table_with(pending=4, running={1: 3, 2: 1})
        plan = plan_for(table, {1: live(), 2: live(), 3: live()})
        # running 1:3 2:1 3:0 -> 3; then 2 and 3 tie at 1 -> 2; then 3; then tie at 2 -> 2
        self.assertEqual(workers_of(plan), [3, 2, 3, 2])

    def test_ties_go_to_lowest_id(self):
        table = table_with(pending=1)
        plan = plan_for(table, {7: live(), 3: live(), 5: live()})
        self.assertEqual(placements(plan), [("job00000", 3)])

    def test_round_robin_among_equal_workers(self):
        table = table_with(pending=6)
        plan = plan_for(table, {2: live(), 1: live(), 3: live()})
        self.assertEqual(workers_of(plan), [1, 2, 3, 1, 2, 3])

    def test_dead_and_draining_workers_get_nothing(self):
        table = table_with(pending=3)
        workers = {
            1: WorkerView(live=False, draining=False, slots=4),
            2: WorkerView(live=True, draining=True, slots=4),
            3: live(slots=4),
        }
        self.assertEqual(set(workers_of(plan_for(table, workers))), {3})
        del workers[3]
        self.assertEqual(plan_for(table, workers), [])

    def test_full_workers_get_nothing_and_planning_stops_at_free_slots(self):
        table = table_with(pending=10, running={1: 2, 2: 1})
        plan = plan_for(table, {1: live(slots=2), 2: live(slots=3), 3: live(slots=0)})
        self.assertEqual(workers_of(plan), [2, 2])

    def test_worker_over_its_slots_gets_nothing(self):
        table = table_with(pending=2, running={1: 5})
        plan = plan_for(table, {1: live(slots=2), 2: live(slots=1)})
        self.assertEqual(placements(plan), [("job00005", 2)])

    def test_jobs_running_on_unknown_workers_do_not_count(self):
        table = table_with(pending=2, running={9: 3})
        plan = plan_for(table, {1: live(slots=1), 2: live(slots=1)})
        self.assertEqual(placements(plan), [("job00003", 1), ("job00004", 2)])

    def test_attempt_is_one_more_than_the_jobs_attempts(self):
        table = table_with(pending=2)
        state = as_format_1(table.snapshot())
        state["jobs"][1]["attempts"] = 2  # a job put back after a lost worker
        table.restore(json.dumps(state).encode())
        plan = plan_for(table, {1: live()})
        self.assertEqual([c.attempt for c in decoded(plan)], [1, 3])

    def test_plan_changes_nothing_and_applies_cleanly(self):
        table = table_with(pending=6, running={1: 1})
        before = table.snapshot()
        workers = {1: live(slots=2), 2: live(slots=2)}
        plan = plan_for(table, workers)
        self.assertEqual(table.snapshot(), before)
        self.assertEqual(plan_for(table, workers), plan)
        applied = table.apply(next(_index), commands.assign_jobs(plan))
        self.assertTrue(all(job is not None for job in applied))
        self.assertEqual(table.running_counts(), {1: 2, 2: 2})
        self.assertEqual(plan_for(table, workers), [])

    def test_many_pending_jobs_only_fill_free_slots(self):
        table = table_with(pending=10_000)
        plan = plan_for(table, {n: live(slots=4) for n in (1, 2, 3)})
        self.assertEqual(len(plan), 12)
        self.assertEqual([c.job_id for c in decoded(plan)], [f"job{n:05d}" for n in range(12)])

    def test_entries_carry_the_planning_time_and_incarnation(self):
        table = table_with(pending=3)
        workers = {1: WorkerView(live=True, draining=False, slots=2, incarnation=41), 2: live()}
        plan = plan_for(table, workers, now_ms=NOW_MS + 7)
        self.assertTrue(all(isinstance(a, scheduler_pb2.AssignJobCommand) for a in plan))
        self.assertEqual(
            [(c.worker_id, c.worker_incarnation, c.assigned_at_ms) for c in decoded(plan)],
            [(1, 41, NOW_MS + 7), (2, 0, NOW_MS + 7), (1, 41, NOW_MS + 7)],
        )

    def test_applied_plan_shows_the_planning_time_as_start(self):
        table = table_with(pending=1)
        plan = plan_for(table, {1: live()}, now_ms=NOW_MS + 7)
        [job] = table.apply(next(_index), commands.assign_jobs(plan))
        self.assertEqual((job.executed_by, job.started_at_ms), (1, NOW_MS + 7))

    def test_place_picks_least_loaded_workers_for_new_jobs(self):
        table = table_with(running={1: 1})
        places = Assigner().place(table, {1: live(slots=2), 2: live(slots=2)}, 5)
        self.assertEqual(places, [2, 1, 2])

    def test_place_finds_nothing_when_every_slot_is_taken(self):
        table = table_with(running={1: 2})
        self.assertEqual(Assigner().place(table, {1: live(slots=2)}, 3), [])

    def test_worker_stops_receiving_once_its_slots_are_filled(self):
        table = table_with(pending=5)
        plan = plan_for(table, {1: live(slots=1), 2: live(slots=4)})
        self.assertEqual(workers_of(plan), [1, 2, 2, 2, 2])
