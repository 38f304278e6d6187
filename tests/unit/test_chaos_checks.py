"""The chaos suite's own instruments: the run log a job writes (`tests/chaos/runs.py`,
run for real in a shell) and the invariants (`tests/chaos/checks.py`), each shown to
catch what it is there for."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.trial import unittest

from tests.chaos.checks import attempt_of, check_runs, check_settled, check_tables
from tests.chaos.runs import Run, parse_runs, read_runs, tick_command

MS = 1_000_000  # nanoseconds


def job(status="completed", history=(), job_id="j1", **fields) -> dict:
    return {
        "id": job_id,
        "status": status,
        "attempts": len(history),
        "assigned_worker": history[-1]["worker"] if history else None,
        "attempt_history": list(history),
        **fields,
    }


def attempt(n: int, worker: int, started_ms: int, outcome="completed", finished_ms=None) -> dict:
    return {
        "attempt": n,
        "worker": worker,
        "started_at_ms": started_ms,
        "finished_at_ms": finished_ms,
        "outcome": outcome,
        "late": False,
    }


def run(token: str, pid: int, first_ms: int, last_ms: int, ended=True) -> Run:
    return Run(token, pid, first_ms * MS, last_ms * MS, ended)


NODES = {101: 1, 102: 2, 103: 3}


class TickCommandTests(unittest.TestCase):
    def test_a_run_logs_its_start_ticks_and_end_with_its_parent_pid(self):
        path = Path(self.mktemp())
        process = subprocess.run(
            ["sh", "-c", tick_command(path, 3)], capture_output=True, timeout=30, check=True
        )
        self.assertEqual(process.stdout, b"")
        [only] = read_runs(path)
        self.assertTrue(only.ended)
        self.assertEqual(only.lines, 5)  # start, 3 ticks, end
        self.assertGreater(only.last_ns - only.first_ns, 0.25e9)
        self.assertEqual(only.node_pid, os.getpid())  # the shell's parent: this process

    def test_two_runs_of_one_command_are_two_runs(self):
        path = Path(self.mktemp())
        for _ in range(2):
            subprocess.run(["sh", "-c", tick_command(path, 1)], timeout=30, check=True)
        runs = read_runs(path)
        self.assertEqual(len(runs), 2)
        self.assertFalse(runs[0].overlaps(runs[1]))

    def test_a_file_never_written_has_no_runs(self):
        self.assertEqual(read_runs(Path(self.mktemp())), [])

    def test_lines_cut_short_are_skipped(self):
        text = "1.5 101 start 5\n1.5 101 tick 9\n1.5 10"
        [only] = parse_runs(text)
        self.assertEqual((only.first_ns, only.last_ns, only.lines, only.ended), (5, 9, 2, False))


class RunCheckTests(unittest.TestCase):
    def test_one_run_per_attempt_in_turn_is_clean(self):
        entry = job(history=[attempt(1, 1, 1000, "lost"), attempt(2, 2, 5000)])
        runs = [run("a", 101, 1001, 3000, ended=False), run("b", 102, 5002, 9000)]
        result = check_runs(entry, runs, NODES, max_attempts=3)
        self.assertEqual(result.violations, [])
        self.assertEqual(result.gaps, [2.002])

    def test_overlapping_runs_are_a_violation(self):
        entry = job(history=[attempt(1, 1, 1000, "lost"), attempt(2, 2, 2000)])
        runs = [run("a", 101, 1001, 3000, ended=False), run("b", 102, 2500, 9000)]
        [violation] = check_runs(entry, runs, NODES, max_attempts=3).violations
        self.assertIn("overlap by 0.500s", violation)

    def test_an_attempt_run_twice_is_a_violation(self):
        entry = job(history=[attempt(1, 1, 1000)])
        runs = [run("a", 101, 1001, 2000, ended=False), run("b", 101, 3000, 4000)]
        [violation] = check_runs(entry, runs, NODES, max_attempts=3).violations
        self.assertIn("attempt 1 ran 2 times", violation)

    def test_a_job_of_one_attempt_that_ran_twice_is_a_violation(self):
        entry = job(history=[attempt(1, 1, 1000, "lost"), attempt(2, 2, 5000)])
        runs = [run("a", 101, 1001, 2000, ended=False), run("b", 102, 5001, 6000)]
        violations = check_runs(entry, runs, NODES, max_attempts=1).violations
        self.assertEqual(len(violations), 1)
        self.assertIn("max_attempts 1 but it ran 2 times", violations[0])

    def test_a_run_on_a_node_without_an_attempt_there_is_a_violation(self):
        entry = job(history=[attempt(1, 1, 1000)])
        runs = [run("a", 101, 1001, 2000), run("b", 102, 3000, 4000)]
        violations = check_runs(entry, runs, NODES, max_attempts=3).violations
        self.assertEqual(len(violations), 1)
        self.assertIn("on node 2 belongs to no attempt there", violations[0])

    def test_a_run_before_its_attempt_was_assigned_belongs_to_none(self):
        entry = job(history=[attempt(1, 1, 1000)])
        violations = check_runs(entry, [run("a", 101, 900, 2000)], NODES, 3).violations
        self.assertIn("belongs to no attempt there", violations[0])

    def test_a_run_of_an_unknown_process_is_a_violation(self):
        entry = job(history=[attempt(1, 1, 1000)])
        runs = [run("a", 101, 1001, 2000), run("b", 999, 3000, 4000)]
        violations = check_runs(entry, runs, NODES, max_attempts=3).violations
        self.assertIn("unknown process 999", violations[0])

    def test_completed_without_a_run_to_its_end_is_a_violation(self):
        entry = job(history=[attempt(1, 1, 1000)])
        [violation] = check_runs(entry, [], NODES, max_attempts=3).violations
        self.assertIn("never ran to its end", violation)
        [violation] = check_runs(
            entry, [run("a", 101, 1001, 2000, ended=False)], NODES, 3
        ).violations
        self.assertIn("never ran to its end", violation)

    def test_a_lost_attempt_that_never_ran_is_fine(self):
        entry = job(status="failed", history=[attempt(1, 1, 1000, "lost")])
        self.assertEqual(check_runs(entry, [], NODES, max_attempts=1).violations, [])

    def test_a_run_that_went_on_after_its_attempt_ended_is_a_violation(self):
        entry = job(status="failed", history=[attempt(1, 1, 1000, "failed", finished_ms=3000)])
        self.assertEqual(check_runs(entry, [run("a", 101, 1001, 3100)], NODES, 3).violations, [])
        [violation] = check_runs(entry, [run("a", 101, 1001, 3500)], NODES, 3).violations
        self.assertIn("outlived its attempt 1 (failed) by 0.500s", violation)

    def test_runs_belong_to_the_latest_attempt_on_their_node_that_began_before_them(self):
        history = [attempt(1, 1, 1000, "lost"), attempt(2, 2, 2000, "lost"), attempt(3, 1, 3000)]

        def number(node_id, first_ms):
            record = attempt_of(history, node_id, run("r", 100 + node_id, first_ms, first_ms))
            return record and record["attempt"]

        self.assertEqual(number(1, 1500), 1)
        self.assertEqual(number(1, 3001), 3)
        self.assertEqual(number(2, 2000), 2)
        self.assertIsNone(number(3, 5000))


class TableCheckTests(unittest.TestCase):
    def test_equal_tables_holding_every_acknowledged_job_are_clean(self):
        tables = {1: [job(job_id="a"), job(job_id="b")], 2: [job(job_id="b"), job(job_id="a")]}
        self.assertEqual(check_tables(tables, {"a", "b"}), [])

    def test_a_missing_acknowledged_job_is_a_violation(self):
        tables = {1: [job(job_id="a")], 2: [job(job_id="a")]}
        violations = check_tables(tables, {"a", "b"})
        self.assertEqual(len(violations), 2)
        self.assertIn("acknowledged job b is missing from node 1's table", violations)

    def test_a_job_listed_twice_is_a_violation(self):
        tables = {1: [job(job_id="a"), job(job_id="a")]}
        self.assertEqual(check_tables(tables, {"a"}), ["job a is 2 times in node 1's table"])

    def test_tables_that_differ_are_a_violation(self):
        tables = {1: [job(job_id="a")], 2: [job(job_id="a", status="failed")]}
        [violation] = check_tables(tables, set())
        self.assertIn("nodes 1 and 2 differ on job a: status 'completed' vs 'failed'", violation)

    def test_jobs_left_pending_or_running_are_a_violation(self):
        table = [job(job_id="a"), job(job_id="b", status="running", history=[attempt(1, 2, 5)])]
        [violation] = check_settled(table)
        self.assertIn("job b is still running (attempt 1, worker 2)", violation)
