"""A job table snapshot restored in steps: the table unchanged until the last one, then
exactly the table `restore` makes; and the reader under it, which accepts and refuses
what `json.loads` does."""

from __future__ import annotations

import json
import random

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.interfaces import ISnapshotRestore
from jobsched.jobs import commands
from jobsched.jobs.snapshot_reader import read_object
from jobsched.jobs.table import JobTable, ListQuery
from tests.unit.snapshot_forms import as_format_1
from tests.unit.test_snapshot_build import T0, History, new_table


def random_table(seed: int, entries: int = 60) -> JobTable:
    table = new_table(1 if seed % 4 == 0 else commands.ENTRY_FORMS)
    history = History(seed, table)
    for _ in range(entries):
        history.step()
    return table


def restore_in_steps(table: JobTable, data: bytes, rng: random.Random) -> int:
    """Restore `data` into `table` in random small steps, checking at each one that
    the table is unchanged; the number of steps."""
    before = table.snapshot()
    restore = table.begin_restore(data)
    steps = 1
    while not restore.step(rng.choice((0.5, 1, 2, 7))):
        if table.snapshot() != before:
            raise AssertionError(f"the table changed before the last step ({steps})")
        steps += 1
    return steps


def listed(table: JobTable) -> list:
    return table.list_jobs(ListQuery(page_size=1000)).jobs


class SnapshotRestoreTests(unittest.TestCase):
    def test_provides_the_interface(self):
        self.assertTrue(verifyObject(ISnapshotRestore, JobTable().begin_restore(b"{}")))

    def test_a_restore_in_steps_makes_the_table_of_the_snapshot(self):
        """Random tables of either format, restored in random small steps into a table
        that holds other jobs: unchanged until the last step, which tells listeners
        once; then the same jobs, keys and next snapshot as the table snapshotted."""
        for seed in range(30):
            rng = random.Random(seed)
            source = random_table(seed)
            data = source.snapshot()
            target = random_table(seed + 1000, entries=10)
            events: list[str] = []
            target.add_listener(lambda event, job, events=events: events.append(event))
            restore_in_steps(target, data, rng)
            self.assertEqual(events, ["restored"], f"seed {seed}")
            self.assertEqual(target.snapshot(), data, f"seed {seed}")
            self.assertEqual(listed(target), listed(source), f"seed {seed}")
            again = commands.submit_job("again", "x", T0, idempotency_key="key-1")
            self.assertEqual(target.apply(10_000, again), source.apply(10_000, again))

    def test_a_snapshot_nested_past_the_interpreters_depth_is_refused(self):
        deep = b'{"format":2,"jobs":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
        self.assertRaises(ValueError, JobTable().begin_restore(deep).step, 1000)
        self.assertRaises(ValueError, JobTable().restore, deep)

    def test_a_step_reads_or_loads_about_its_limit_of_records(self):
        table = new_table(commands.ENTRY_FORMS)
        for n in range(100):
            table.apply(n + 1, commands.submit_job(f"job-{n}", "true", T0 + n))
        restore = JobTable().begin_restore(table.snapshot())
        steps = 1
        while not restore.step(10):
            steps += 1
        # 100 records read, loaded and their records cached: about 30 steps of 10
        self.assertGreaterEqual(steps, 29)
        self.assertLessEqual(steps, 32)

    def test_a_snapshot_with_whitespace_or_of_an_older_node_restores_the_same_table(self):
        source = random_table(7)
        data = source.snapshot()
        for form in (
            json.dumps(json.loads(data), indent=2).encode(),
            json.dumps(as_format_1(data)).encode(),
        ):
            target = JobTable()
            restore_in_steps(target, form, random.Random(7))
            self.assertEqual(target.snapshot(), data)

    def test_damaged_snapshots_are_refused_at_some_step_and_change_nothing(self):
        """A snapshot cut short, or with a byte changed: ValueError at some step, the
        table as it was (and a later step refuses again, as `restore` in one call
        does); or, where the change left a valid snapshot, the table of what `restore`
        makes of it."""
        data = random_table(3).snapshot()
        rng = random.Random(3)
        for trial in range(300):
            damaged = bytearray(data)
            if trial % 2:
                del damaged[rng.randrange(len(damaged)) :]
            else:
                damaged[rng.randrange(len(damaged))] = rng.choice(b'{}[],:"0a \\')
            target = random_table(4, entries=10)
            before = target.snapshot()
            restore = target.begin_restore(bytes(damaged))
            try:
                while not restore.step(rng.choice((1, 5))):
                    self.assertEqual(target.snapshot(), before)
            except ValueError:
                self.assertEqual(target.snapshot(), before, f"trial {trial}")
                self.assertRaises(ValueError, restore.step, 1)
                self.assertRaises(ValueError, JobTable().restore, bytes(damaged))
                continue
            whole = JobTable()
            whole.restore(bytes(damaged))
            self.assertEqual(target.snapshot(), whole.snapshot(), f"trial {trial}")


class ReadObjectTests(unittest.TestCase):
    """read_object reads what json.loads reads, a member or an element at a time."""

    def read(self, text: str, streamed=frozenset(("jobs",))) -> dict:
        values: dict = {}
        elements: dict = {}
        for _ in read_object(text, streamed, values, elements):
            pass
        return {**values, **elements}

    def test_reads_members_and_streamed_arrays_as_json_loads_does(self):
        for text in (
            "{}",
            ' { "a" : 1 , "jobs" : [ 1 , [2, {"x": null}] ] , "b" : [3] } \n',
            '{"jobs":[],"z":"\\u00e9\\n"}',
            '{"jobs": "not an array"}',
        ):
            self.assertEqual(self.read(text), json.loads(text), text)

    def test_yields_once_per_member_and_per_element_of_a_streamed_array(self):
        members = list(read_object('{"a":1,"jobs":[1,2,3],"b":2}', frozenset(("jobs",)), {}, {}))
        self.assertEqual(members, ["a", "jobs", "jobs", "jobs", "b"])

    def test_refuses_what_json_loads_refuses(self):
        """Random damage to a small object: the reader refuses it exactly when
        json.loads does (or when it is JSON but no object), else reads the same."""
        text = '{"format":2,"jobs":[[1,"a",[["x",null]]],[2,"b",[]]],"keys":[["k","j",3]]}'
        rng = random.Random(11)
        for trial in range(2000):
            damaged = list(text)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(damaged) + 1)
                if rng.random() < 0.5 and at < len(damaged):
                    del damaged[at]
                else:
                    damaged.insert(at, rng.choice('{}[],:"0 a'))
            candidate = "".join(damaged)
            try:
                expected = json.loads(candidate, object_pairs_hook=_refuse_duplicates)
            except (ValueError, _Duplicate):
                expected = None
            if not isinstance(expected, dict):
                if expected is None and _has_duplicates(candidate):
                    continue
                self.assertRaises(ValueError, self.read, candidate)
                continue
            self.assertEqual(self.read(candidate), expected, f"trial {trial}: {candidate}")


class _Duplicate(Exception):
    pass


def _refuse_duplicates(pairs):
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _Duplicate()
    return dict(pairs)


def _has_duplicates(candidate: str) -> bool:
    try:
        json.loads(candidate, object_pairs_hook=_refuse_duplicates)
    except _Duplicate:
        return True
    except ValueError:
        return False
    return False
