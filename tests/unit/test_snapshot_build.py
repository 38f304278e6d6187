"""A job table snapshot built in steps while entries apply: the bytes the table's
snapshot had when the build began, and a table whose later snapshots stay right."""

from __future__ import annotations

import itertools
import json
import random

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.interfaces import ISnapshotBuild
from jobsched.jobs import commands
from jobsched.jobs import table as table_module
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.jobs.table import JobTable, ListQuery

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000


class History:
    """Random entries for a job table, each applied to the tables given."""

    def __init__(self, seed: int, *tables: JobTable) -> None:
        self.rng = random.Random(seed)
        self.tables = tables
        self.index = itertools.count(1)
        self.jobs = 0
        self.now = T0
        self.lost: list[tuple[str, int, int]] = []  # (job, attempt, worker) requeued

    def apply(self, command: bytes) -> None:
        index = next(self.index)
        for table in self.tables:
            table.apply(index, command)

    def job(self, *statuses: JobStatus):
        """A random job of one of `statuses` (the first table's view), or None."""
        jobs = [
            job
            for job in self.tables[0].list_jobs(ListQuery(page_size=1000)).jobs
            if job.status in statuses
        ]
        return self.rng.choice(jobs) if jobs else None

    def step(self) -> None:
        """Apply one random entry."""
        rng = self.rng
        self.now += rng.choice((0, 1000, HOUR_MS, 5 * HOUR_MS))  # keys expire after 24 h
        kind = rng.choice(("submit", "submit", "assign", "finish", "cancel", "requeue", "late"))
        if kind == "submit" or self.jobs == 0:
            self.jobs += 1
            key = rng.choice(("", "", f"key-{self.jobs % 5}"))
            self.apply(
                commands.submit_job(
                    f"job-{self.jobs}",
                    f"echo {self.jobs}",
                    self.now,
                    idempotency_key=key,
                    max_attempts=3,
                )
            )
        elif kind == "assign" and (job := self.job(JobStatus.PENDING)):
            worker = rng.randint(1, 3)
            self.apply(commands.assign_job(job.job_id, worker, job.attempts + 1, 7, self.now))
        elif kind == "finish" and (job := self.job(JobStatus.RUNNING)):
            status = rng.choice((JobStatus.COMPLETED, JobStatus.FAILED))
            self.apply(
                commands.batch_update(
                    [self.update(job.job_id, job.attempts, job.assigned_worker, status)]
                )
            )
        elif kind == "cancel" and (job := self.job(*JobStatus)):
            self.apply(commands.cancel_job(job.job_id, self.now))
        elif kind == "requeue" and (job := self.job(JobStatus.RUNNING)):
            self.lost.append((job.job_id, job.attempts, job.assigned_worker))
            self.apply(commands.requeue_job(job.job_id, job.attempts, "worker lost", self.now))
        elif kind == "late" and self.lost:
            job_id, attempt, worker = self.lost.pop(rng.randrange(len(self.lost)))
            self.apply(
                commands.batch_update([self.update(job_id, attempt, worker, JobStatus.COMPLETED)])
            )
        else:
            self.apply(commands.register_worker(rng.randint(1, 5)))

    def update(self, job_id: str, attempt: int, worker: int, status: JobStatus):
        result = JobResult(
            status=status,
            exit_code=0 if status is JobStatus.COMPLETED else 1,
            output=f"out {job_id}",
            error="",
            output_truncated=False,
            started_at_ms=self.now - 5,
            completed_at_ms=self.now,
        )
        return commands.status_update(job_id, result, worker, attempt)


def new_table(entry_forms: int) -> JobTable:
    table = JobTable()
    table.apply(0, commands.entry_forms(entry_forms))
    return table


class SnapshotBuildTests(unittest.TestCase):
    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(ISnapshotBuild, JobTable().begin_snapshot()))

    def test_a_build_is_the_snapshot_of_when_it_began_whatever_applies_meanwhile(self):
        """Random histories, a build begun in the middle and stepped a few records at a
        time between further random entries: the build returns exactly what the
        table's snapshot was when it began, and the table's own snapshots afterwards
        are those of a table that never built one (its cache was not corrupted)."""
        for seed in range(40):
            entry_forms = 1 if seed % 4 == 0 else commands.ENTRY_FORMS
            table, plain = new_table(entry_forms), new_table(entry_forms)
            history = History(seed, table, plain)
            for _ in range(history.rng.randint(0, 60)):
                history.step()
            if seed % 3 == 0:
                table.snapshot()  # some records cached before the build, some not
            expected = table.snapshot() if seed % 2 else plain.snapshot()
            build = table.begin_snapshot()
            built = None
            for _ in range(1000):
                for _ in range(history.rng.randint(0, 4)):
                    history.step()
                built = build.step(history.rng.choice((1, 2, 3)))
                if built is not None:
                    break
            self.assertEqual(built, expected, f"seed {seed}")
            self.assertEqual(table.snapshot(), plain.snapshot(), f"seed {seed}")
            restored = JobTable()
            restored.restore(built)
            self.assertEqual(restored.snapshot(), expected, f"seed {seed}")

    def test_a_step_encodes_at_most_its_limit(self):
        """A step encodes about `limit` records (the reactor's slice) and visits at
        most 16 times as many jobs already encoded; idempotency keys go 8 to a unit."""
        table = new_table(commands.ENTRY_FORMS)
        for n in range(500):
            command = commands.submit_job(f"job-{n}", "true", T0 + n, idempotency_key=f"k{n}")
            table.apply(n + 1, command)
        table.snapshot()  # every record encoded
        table.apply(600, commands.submit_job("job-new", "true", T0 + 600))
        table.apply(601, commands.cancel_job("job-7", T0 + 700))
        encoded = []
        original = table_module._snapshot_record
        self.patch(table_module, "_snapshot_record", lambda *a: encoded.append(1) or original(*a))
        build = table.begin_snapshot()
        steps = 1
        while (data := build.step(2)) is None:
            steps += 1
            self.assertLess(steps, 1000)
        self.assertEqual(len(encoded), 2)  # job-7 changed, job-new never encoded
        self.assertEqual(len(json.loads(data)["jobs"]), 501)
        self.assertGreaterEqual(steps, 500 // 16 + 501 // 32)
        self.assertEqual(data, table.snapshot())

    def test_the_whole_snapshot_is_one_build_to_the_end(self):
        table = new_table(commands.ENTRY_FORMS)
        self.assertEqual(
            json.loads(table.snapshot()),
            {
                "attempt_fields": list(table_module._ATTEMPT_FIELDS),
                "entry_forms": commands.ENTRY_FORMS,
                "fields": list(table_module._RECORD_FIELDS),
                "format": table_module.SNAPSHOT_FORMAT,
                "idempotency_keys": [],
                "jobs": [],
                "next_seq": 1,
                "workers": [],
            },
        )
