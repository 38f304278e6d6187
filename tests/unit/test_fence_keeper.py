"""The fence keeper's logic (FenceKeeper), fed messages and times, with fake killers."""

from __future__ import annotations

from twisted.trial import unittest

from jobsched.worker.fence_keeper import (
    CONTAINER,
    GATHER_SECONDS,
    GIVE_UP_SECONDS,
    KILL_RETRY_SECONDS,
    LEASE_RAN_OUT,
    NODE_DIED,
    PROCESS_GROUP,
    STARTED_WITHOUT_LEASE,
    FenceKeeper,
    LineBuffer,
    ProcessGroupKiller,
)


class FakeKiller:
    """Records its kills in the shared list; fails for targets in `failing`, finds
    nothing for those in `missing`."""

    def __init__(self, kind, kills, failing, missing):
        self.kind, self.kills, self.failing, self.missing = kind, kills, failing, missing
        self.prepared = 0

    def prepare(self):
        self.prepared += 1
        if "prepare" in self.failing:
            raise OSError("engine unreachable")

    def kill(self, target):
        self.kills.append((self.kind, target))
        if target in self.failing:
            raise OSError("engine unreachable")
        return target not in self.missing


class Keeper:
    """A FenceKeeper whose kills and reports are recorded."""

    def __init__(self):
        self.kills = []  # (kind, target)
        self.reports = []
        self.last_words = []
        self.failing = set()
        self.missing = set()
        self.killers = {
            kind: FakeKiller(kind, self.kills, self.failing, self.missing)
            for kind in (PROCESS_GROUP, CONTAINER)
        }
        self.keeper = FenceKeeper(
            self.killers, report=self.reports.append, last_words=self.last_words.append
        )

    def feed(self, now, *lines):
        for line in lines:
            self.keeper.handle(line, now)


class LeaseTests(unittest.TestCase):
    def test_runs_live_until_the_deadline_then_all_die_once(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0", "run 1 pgid 4242 job-a", "run 2 container jobsched-b job-b")
        k.keeper.check(9.99)
        self.assertEqual(k.kills, [])
        k.keeper.check(10.0)
        self.assertEqual(k.kills, [(PROCESS_GROUP, "4242"), (CONTAINER, "jobsched-b")])
        self.assertEqual(
            k.reports,
            [
                f"killed job job-a (process group 4242): {LEASE_RAN_OUT}",
                f"killed job job-b (container jobsched-b): {LEASE_RAN_OUT}",
            ],
        )
        k.keeper.check(11.0)
        self.assertEqual(len(k.kills), 2)  # each once

    def test_a_renewal_moves_the_deadline(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0", "run 1 pgid 4242 job-a")
        k.feed(9.0, "lease 20.0")
        k.keeper.check(15.0)
        self.assertEqual(k.kills, [])
        k.keeper.check(20.0)
        self.assertEqual(len(k.kills), 1)

    def test_an_ended_run_is_never_killed(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0", "run 1 pgid 4242 job-a", "end 1")
        k.keeper.check(30.0)
        k.keeper.node_gone(30.0)
        self.assertEqual(k.kills, [])

    def test_a_run_started_without_a_lease_dies_at_once(self):
        k = Keeper()
        k.feed(0.0, "run 1 pgid 4242 job-a")
        self.assertEqual(k.kills, [(PROCESS_GROUP, "4242")])
        self.assertEqual(
            k.reports, [f"killed job job-a (process group 4242): {STARTED_WITHOUT_LEASE}"]
        )

    def test_a_run_started_after_the_lease_ran_out_dies_at_once(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0")
        k.feed(10.5, "run 7 container jobsched-c job-c")
        self.assertEqual(k.kills, [(CONTAINER, "jobsched-c")])

    def test_after_a_renewal_new_runs_live_again(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0", "run 1 pgid 4242 job-a")
        k.keeper.check(10.0)
        k.feed(12.0, "lease 20.0", "run 2 pgid 4343 job-b")
        k.keeper.check(19.0)
        self.assertEqual(k.kills, [(PROCESS_GROUP, "4242")])

    def test_a_container_not_there_yet_is_looked_for_again_while_the_lease_is_out(self):
        k = Keeper()
        k.missing.add("jobsched-b")
        k.feed(0.0, "lease 10.0", "run 1 container jobsched-b job-b")
        k.keeper.check(10.0)
        self.assertEqual(k.reports, [])  # nothing killed yet
        self.assertEqual(k.keeper.wait_seconds(10.0), KILL_RETRY_SECONDS)
        k.keeper.check(10.0 + KILL_RETRY_SECONDS / 2)
        self.assertEqual(len(k.kills), 1)  # not before the retry is due
        k.missing.clear()  # the (paused) node created it meanwhile
        k.keeper.check(10.0 + KILL_RETRY_SECONDS)
        self.assertEqual(len(k.kills), 2)
        self.assertEqual(k.reports, [f"killed job job-b (container jobsched-b): {LEASE_RAN_OUT}"])
        self.assertIsNone(k.keeper.wait_seconds(11.0))

    def test_a_renewed_lease_stops_the_looking(self):
        k = Keeper()
        k.missing.add("jobsched-b")
        k.feed(0.0, "run 1 container jobsched-b job-b")  # no lease: killed at once, not found
        k.feed(0.1, "lease 10.0")
        k.keeper.check(5.0)
        self.assertEqual(len(k.kills), 1)

    def test_a_failed_kill_is_reported_once_and_tried_again(self):
        k = Keeper()
        k.failing.add("jobsched-b")
        k.feed(0.0, "lease 10.0", "run 1 container jobsched-b job-b")
        for n in range(4):
            k.keeper.check(10.0 + n * KILL_RETRY_SECONDS)
        self.assertEqual(len(k.kills), 4)
        self.assertEqual(len(k.reports), 1)
        k.failing.clear()
        k.keeper.check(10.0 + 4 * KILL_RETRY_SECONDS)
        self.assertEqual(k.reports[-1], f"killed job job-b (container jobsched-b): {LEASE_RAN_OUT}")

    def test_wait_seconds_is_the_time_to_the_deadline_while_something_runs(self):
        k = Keeper()
        self.assertIsNone(k.keeper.wait_seconds(0.0))  # nothing to guard
        k.feed(0.0, "lease 10.0", "run 1 pgid 4242 job-a")
        self.assertEqual(k.keeper.wait_seconds(4.0), 6.0)
        self.assertEqual(k.keeper.wait_seconds(12.0), 0.0)
        k.keeper.check(12.0)
        self.assertIsNone(k.keeper.wait_seconds(12.0))  # killed: nothing left to do

    def test_lines_gather_for_a_moment_while_the_lease_holds_and_never_once_it_ran_out(self):
        k = Keeper()
        self.assertEqual(k.keeper.gather_seconds(0.0), 0.0)  # no lease yet
        k.feed(0.0, "lease 10.0")
        self.assertEqual(k.keeper.gather_seconds(4.0), GATHER_SECONDS)
        self.assertAlmostEqual(
            k.keeper.gather_seconds(10.0 - GATHER_SECONDS / 2), GATHER_SECONDS / 2
        )
        self.assertEqual(k.keeper.gather_seconds(10.0), 0.0)
        self.assertEqual(k.keeper.gather_seconds(12.0), 0.0)


class NodeGoneTests(unittest.TestCase):
    def test_every_live_run_dies_with_last_words(self):
        k = Keeper()
        k.feed(0.0, "lease 100.0", "run 1 pgid 4242 job-a", "run 2 container jobsched-b job-b")
        k.keeper.node_gone(50.0)
        self.assertEqual(k.kills, [(PROCESS_GROUP, "4242"), (CONTAINER, "jobsched-b")])
        self.assertEqual(k.reports, [])
        self.assertEqual(
            k.last_words,
            [
                f"killed job job-a (process group 4242): {NODE_DIED}",
                f"killed job job-b (container jobsched-b): {NODE_DIED}",
            ],
        )
        self.assertTrue(k.keeper.done(50.0))
        self.assertIsNone(k.keeper.wait_seconds(50.0))

    def test_runs_killed_for_the_lease_are_not_killed_again(self):
        """Their process group may be gone, and its id taken by someone else."""
        k = Keeper()
        k.feed(0.0, "lease 10.0", "run 1 pgid 4242 job-a")
        k.keeper.check(10.0)
        k.feed(11.0, "lease 20.0", "run 2 pgid 4343 job-b")
        k.keeper.node_gone(12.0)
        self.assertEqual(k.kills, [(PROCESS_GROUP, "4242"), (PROCESS_GROUP, "4343")])

    def test_a_missing_container_is_looked_for_a_while_then_given_up(self):
        """The node may have died with a create or start on its way to the engine."""
        k = Keeper()
        k.missing.add("jobsched-b")
        k.feed(0.0, "lease 100.0", "run 1 container jobsched-b job-b")
        k.keeper.node_gone(50.0)
        self.assertFalse(k.keeper.done(50.0))
        now = 50.0
        while (wait := k.keeper.wait_seconds(now)) is not None:
            now += wait
            k.keeper.check(now)
        self.assertTrue(k.keeper.done(now))
        self.assertGreaterEqual(now, 50.0 + GIVE_UP_SECONDS)
        self.assertEqual(len(k.kills), round(GIVE_UP_SECONDS / KILL_RETRY_SECONDS) + 1)


class RobustnessTests(unittest.TestCase):
    def test_one_failed_kill_does_not_stop_the_others(self):
        k = Keeper()
        k.failing.add("jobsched-b")
        k.feed(0.0, "lease 10.0", "run 1 container jobsched-b job-b", "run 2 pgid 4242 job-a")
        k.keeper.check(10.0)
        self.assertEqual([target for _, target in k.kills], ["jobsched-b", "4242"])
        self.assertEqual(
            k.reports[0],
            f"could not kill job job-b (container jobsched-b) ({LEASE_RAN_OUT}): "
            "engine unreachable",
        )

    def test_messages_it_does_not_understand_are_reported_and_ignored(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0")
        for line in ("lease soon", "run 1 vm x job-a", "run 1 pgid", "hello", "end"):
            k.feed(1.0, line)
        k.keeper.check(10.0)
        self.assertEqual(k.kills, [])
        self.assertEqual(len(k.reports), 5)
        self.assertIn("'hello'", k.reports[3])

    def test_lines_are_split_across_reads(self):
        lines = LineBuffer()
        self.assertEqual(lines.feed(b"lease 1"), [])
        self.assertEqual(
            lines.feed(b"0.5\nrun 1 pgid 9 j\n\nend"), ["lease 10.5", "run 1 pgid 9 j"]
        )
        self.assertEqual(lines.feed(b" 1\n"), ["end 1"])

    def test_it_refuses_to_kill_process_group_zero_or_one(self):
        for target in ("0", "1", "-5"):
            with self.assertRaises(ValueError):
                ProcessGroupKiller().kill(target)

    def test_a_registration_readies_its_killer_and_a_failure_to_is_only_reported(self):
        k = Keeper()
        k.feed(0.0, "lease 10.0", "run 1 container jobsched-b job-b")
        self.assertEqual(k.killers[CONTAINER].prepared, 1)
        self.assertEqual(k.killers[PROCESS_GROUP].prepared, 0)
        k.failing.add("prepare")
        k.feed(0.0, "run 2 container jobsched-c job-c")
        self.assertEqual(
            k.reports, ["not ready to kill job job-c (container jobsched-c): engine unreachable"]
        )
        k.keeper.check(10.0)
        self.assertEqual(len(k.kills), 2)
