"""RaftService on a simulated network: Clock-driven timers and message delays.

Every message crosses the codec (internal -> protobuf -> internal), so the wire
mapping is exercised by every test here.
"""

from __future__ import annotations

import collections
import random

from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched.errors import (
    CommitTimeout,
    LeadershipLost,
    NotLeader,
    Overloaded,
    RaftStopped,
    StorageFailed,
)
from jobsched.interfaces import (
    IRaftService,
    IRaftStorage,
    IRaftTransport,
    ISnapshotBuild,
    ISnapshotRestore,
    IStateMachine,
)
from jobsched.raft import codec
from jobsched.raft.core import COMPACTION_PATIENCE_SECONDS
from jobsched.raft.messages import AppendEntriesRequest, LogEntry, VoteRequest
from jobsched.raft.service import (
    COMPACTION_BACKLOG_THRESHOLDS,
    RaftLimits,
    RaftService,
    RaftTimings,
)
from jobsched.raft.sqlite_storage import StorageError
from jobsched.raft.storage import MemoryStorage, StoredState

LATENCY = 0.002
RPC_TIMEOUT = 0.1
TURN_SECONDS = 0.001
DEFAULT_TIMINGS = RaftTimings()
DEFAULT_LIMITS = RaftLimits()


def command(n: int) -> bytes:
    """An opaque command naming `n` (Raft never looks inside)."""
    return str(n).encode()


@implementer(IStateMachine)
class Recorder:
    """A state machine that records the numbers it applied; apply returns the index."""

    def __init__(self) -> None:
        self.values: list = []
        self.snapshot_steps = 1  # the steps its snapshot build takes
        self.restore_steps = 1  # the steps a restore takes
        self.on_restore_step = lambda: None  # called at each step of a restore
        self.builds_begun = 0

    def apply(self, index, cmd):
        self.values.append(int(cmd))
        return index

    def snapshot(self) -> bytes:
        return ",".join(map(str, self.values)).encode()

    def begin_snapshot(self):
        self.builds_begun += 1
        return RecorderSnapshot(self.snapshot(), self.snapshot_steps)

    def restore(self, data: bytes) -> None:
        self.values = [int(v) for v in data.decode().split(",")] if data else []

    def begin_restore(self, data: bytes):
        return RecorderRestore(self, data, self.restore_steps)


@implementer(ISnapshotRestore)
class RecorderRestore:
    """A Recorder's restore, complete (values replaced) after `steps` steps; a step of
    data that is not a Recorder's snapshot raises ValueError."""

    def __init__(self, recorder: Recorder, data: bytes, steps: int) -> None:
        self.recorder = recorder
        self.data = data
        self.steps_left = steps

    def step(self, limit):
        self.recorder.on_restore_step()
        self.steps_left -= 1
        if self.steps_left > 0:
            return False
        try:
            self.recorder.restore(self.data)
        except ValueError as e:
            raise ValueError(f"not a Recorder's snapshot: {e}") from e
        return True


@implementer(ISnapshotBuild)
class RecorderSnapshot:
    """A Recorder's values as they were when it began, complete after `steps` steps."""

    def __init__(self, data: bytes, steps: int) -> None:
        self.data = data
        self.steps_left = steps

    def step(self, limit):
        self.steps_left -= 1
        return self.data if self.steps_left <= 0 else None


@implementer(IRaftStorage)
class StallingStorage:
    """A store whose writes never complete (a disk that hangs)."""

    def load(self):
        return StoredState()

    def save_hard_state(self, term, voted_for):
        return defer.Deferred()

    def append(self, entries):
        return defer.Deferred()

    def truncate(self, from_index):
        return defer.Deferred()

    def save_snapshot(self, index, term, data):
        return defer.Deferred()

    save_compaction = save_snapshot

    def close(self):
        return defer.succeed(None)


DISK_FULL = "/data/raft.sqlite3: write failed: No space left on device (database or disk is full)"


class RecordingStorage(MemoryStorage):
    """Records which snapshots reached it as compactions and which as snapshots."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[tuple[str, int]] = []

    def save_compaction(self, index, term, data):
        self.saved.append(("compaction", index))
        return MemoryStorage.save_snapshot(self, index, term, data)

    def save_snapshot(self, index, term, data):
        self.saved.append(("snapshot", index))
        return super().save_snapshot(index, term, data)


@implementer(IRaftStorage)
class FailingStorage(MemoryStorage):
    """A store whose every write fails, as SqliteStorage's do, once `broken` is set."""

    broken = False

    def _fails(self, write, *args):
        if self.broken:
            return defer.fail(StorageError(DISK_FULL))
        return write(self, *args)

    def save_hard_state(self, term, voted_for):
        return self._fails(MemoryStorage.save_hard_state, term, voted_for)

    def append(self, entries):
        return self._fails(MemoryStorage.append, entries)

    def truncate(self, from_index):
        return self._fails(MemoryStorage.truncate, from_index)

    def save_snapshot(self, index, term, data):
        return self._fails(MemoryStorage.save_snapshot, index, term, data)


class TurnsTakeTime(task.Clock):
    """A clock on which the next reactor turn (`callLater(0)`) comes TURN_SECONDS
    later: what falls due meanwhile (messages, timers) comes first, as on a reactor
    whose turns take time."""

    def callLater(self, delay, fn, *args, **kwargs):
        return super().callLater(delay or TURN_SECONDS, fn, *args, **kwargs)


class Network:
    """Delivers Raft requests between services after LATENCY; cut links time out."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.nodes: dict = {}
        self.cut: set = set()
        self.delivered = 0
        self.delivered_kinds: collections.Counter = collections.Counter()
        self.latency = LATENCY  # each way

    def isolate(self, node_id: int) -> None:
        for other in self.nodes:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut.clear()

    def blocked(self, src: int, dst: int) -> bool:
        node = self.nodes.get(dst)
        return (src, dst) in self.cut or node is None or not node.running

    def send(self, src: int, dst: int, request) -> defer.Deferred:
        d = defer.Deferred()
        wire = codec.to_wire(request)

        def lost():
            self.clock.callLater(RPC_TIMEOUT, d.errback, ConnectionError("unreachable"))

        def answer(response):
            if self.blocked(dst, src):
                return lost()
            wire_response = codec.to_wire(response)
            self.clock.callLater(self.latency, lambda: d.callback(codec.from_wire(wire_response)))

        def arrive():
            if self.blocked(src, dst):
                return lost()
            self.delivered += 1
            self.delivered_kinds[type(request).__name__] += 1
            self.nodes[dst].handle(codec.from_wire(wire)).addCallbacks(answer, lambda f: lost())

        self.clock.callLater(self.latency, arrive)
        return d


@implementer(IRaftTransport)
class SimTransport:
    def __init__(self, network: Network, node_id: int) -> None:
        self.network = network
        self.node_id = node_id

    def send(self, peer_id, request):
        return self.network.send(self.node_id, peer_id, request)


def address(node_id: int) -> str:
    return f"127.0.0.1:{50050 + node_id}"


class Cluster:
    """N RaftServices on one Clock and Network."""

    def __init__(
        self,
        size: int,
        seed: int = 1,
        timings: RaftTimings = DEFAULT_TIMINGS,
        limits: RaftLimits = DEFAULT_LIMITS,
        storage_factory=MemoryStorage,
        clock: task.Clock | None = None,
    ) -> None:
        self.clock = clock if clock is not None else task.Clock()
        self.network = Network(self.clock)
        self.ids = list(range(1, size + 1))
        self.rng = random.Random(seed)
        self.timings = timings
        self.limits = limits
        self.storages = {i: storage_factory() for i in self.ids}
        self.storage_failures: dict = {i: [] for i in self.ids}  # messages reported
        self.machines: dict = {}
        self.nodes: dict = {}
        for i in self.ids:
            self.start(i)

    def start(self, node_id: int) -> RaftService:
        """(Re)start a node from its storage with an empty state machine."""
        self.machines[node_id] = Recorder()
        node = RaftService(
            node_id,
            {p: address(p) for p in self.ids if p != node_id},
            address(node_id),
            self.storages[node_id],
            SimTransport(self.network, node_id),
            self.machines[node_id],
            self.clock,
            random.Random(self.rng.random()),
            self.timings,
            self.limits,
            on_storage_failure=self.storage_failures[node_id].append,
        )
        self.nodes[node_id] = self.network.nodes[node_id] = node
        node.startService()
        return node

    def stop(self, node_id: int) -> None:
        self.nodes[node_id].stopService()

    def run(self, seconds: float, step: float = 0.005) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def leaders(self) -> list:
        return [n for n in self.nodes.values() if n.running and n.status().role == "leader"]

    def leader(self) -> RaftService:
        self.run_until(lambda: len(self.leaders()) == 1)
        leader = self.leaders()[0]
        # let the leader commit its no-op so it is settled
        self.run_until(lambda: leader.status().commit_index >= leader.status().last_log_index)
        return leader

    def run_until(self, condition, limit: float = 10.0, step: float = 0.005) -> None:
        """Advance the clock until `condition()` holds; fail after `limit` simulated seconds."""
        waited = 0.0
        while not condition():
            if waited > limit:
                raise AssertionError(f"condition not reached in {limit}s of simulated time")
            self.clock.advance(step)
            waited += step


class StorageInterfaceTests(unittest.TestCase):
    """The in-memory store and the test stores honour IRaftStorage."""

    def test_memory_storage_provides_interface(self):
        self.assertTrue(verifyObject(IRaftStorage, MemoryStorage()))
        self.assertTrue(verifyObject(IRaftStorage, StallingStorage()))

    def test_service_provides_interface(self):
        cluster = Cluster(1)
        self.assertTrue(verifyObject(IRaftService, cluster.nodes[1]))

    def test_memory_storage_reloads_what_it_was_told(self):
        storage = MemoryStorage()
        storage.save_hard_state(3, 2)
        storage.append([LogEntry(1, i, command(i)) for i in range(1, 6)])
        storage.append([LogEntry(3, 4, command(40))])
        storage.save_snapshot(2, 1, b"snap")
        state = storage.load()
        self.assertEqual((state.term, state.voted_for), (3, 2))
        self.assertEqual((state.snapshot.index, state.snapshot.data), (2, b"snap"))
        self.assertEqual([(e.index, e.term) for e in state.entries], [(3, 1), (4, 3)])
        storage.truncate(4)
        self.assertEqual([e.index for e in storage.load().entries], [3])


class ElectionAndCommitTests(unittest.TestCase):
    """Elections, replication, restarts and status over the simulated network."""

    def test_single_node_elects_itself_and_commits(self):
        cluster = Cluster(1)
        node = cluster.nodes[1]
        self.assertEqual(node.status().role, "follower")
        cluster.run(0.31)
        status = node.status()
        self.assertEqual((status.role, status.leader_id), ("leader", 1))
        self.assertEqual(status.leader_address, address(1))
        self.assertTrue(status.has_quorum)
        d = node.propose(command(7))
        self.assertEqual(self.successResultOf(d), 2)  # index 1 is the leader's no-op
        self.assertEqual(cluster.machines[1].values, [7])
        self.assertEqual(node.status().commit_index, 2)
        self.assertEqual(node.status().last_applied, 2)

    def assertElectsOneLeaderAndReplicates(self, size: int) -> None:
        cluster = Cluster(size, seed=size)
        leader = cluster.leader()
        self.assertEqual(len(cluster.leaders()), 1)
        term = leader.status().current_term
        for node in cluster.nodes.values():
            cluster.run_until(lambda node=node: node.status().leader_id == leader.node_id)
            self.assertEqual(node.status().current_term, term)
        results = [leader.propose(command(i)) for i in range(20)]
        cluster.run(0.05)
        self.assertEqual([self.successResultOf(d) for d in results], list(range(2, 22)))
        cluster.run(0.1)
        for machine in cluster.machines.values():
            self.assertEqual(machine.values, list(range(20)))
        self.assertEqual([n.status().commit_index for n in cluster.nodes.values()], [21] * size)

    def test_cluster_of_three_elects_exactly_one_leader_and_replicates(self):
        self.assertElectsOneLeaderAndReplicates(3)

    def test_cluster_of_five_elects_exactly_one_leader_and_replicates(self):
        self.assertElectsOneLeaderAndReplicates(5)

    def test_leader_crash_elects_new_leader_with_higher_term(self):
        cluster = Cluster(3, seed=3)
        old = cluster.leader()
        first = old.propose(command(1))
        cluster.run(0.05)
        self.assertEqual(self.successResultOf(first), 2)
        cluster.stop(old.node_id)
        new = cluster.leader()
        self.assertNotEqual(new.node_id, old.node_id)
        self.assertGreater(new.status().current_term, old.status().current_term)
        d = new.propose(command(2))
        cluster.run(0.05)
        self.successResultOf(d)
        survivors = [cluster.machines[i].values for i in cluster.ids if i != old.node_id]
        self.assertEqual(survivors, [[1, 2], [1, 2]])

    def test_vote_survives_restart(self):
        cluster = Cluster(3, seed=4)
        leader = cluster.leader()
        term = leader.status().current_term
        voter = next(
            i
            for i in cluster.ids
            if i != leader.node_id and cluster.storages[i].load().voted_for == leader.node_id
        )
        other = next(i for i in cluster.ids if i not in (leader.node_id, voter))
        cluster.stop(voter)
        restarted = cluster.start(voter)
        self.assertEqual(restarted.status().current_term, term)
        # Another candidate of the same term is refused: the vote was kept.
        response = self.successResultOf(restarted.handle(VoteRequest(term, other, 99, term)))
        self.assertFalse(response.vote_granted)
        response = self.successResultOf(restarted.handle(VoteRequest(term + 1, other, 99, term)))
        self.assertTrue(response.vote_granted)

    def test_restart_replays_log_after_commit_is_learnt(self):
        cluster = Cluster(3, seed=5)
        leader = cluster.leader()
        for i in range(5):
            leader.propose(command(i))
        cluster.run(0.1)
        follower = next(i for i in cluster.ids if i != leader.node_id)
        cluster.stop(follower)
        node = cluster.start(follower)
        # Nothing is applied before the commit index is known.
        self.assertEqual(cluster.machines[follower].values, [])
        self.assertEqual(node.status().last_log_index, 6)
        cluster.run(0.2)
        self.assertEqual(cluster.machines[follower].values, [0, 1, 2, 3, 4])

    def test_rejoining_node_does_not_disrupt_healthy_leader(self):
        cluster = Cluster(3, seed=6)
        leader = cluster.leader()
        term = leader.status().current_term
        loner = next(i for i in cluster.ids if i != leader.node_id)
        cluster.network.isolate(loner)
        cluster.run(2.0)
        self.assertEqual(cluster.nodes[loner].status().current_term, term)  # pre-vote never won
        self.assertEqual(cluster.nodes[loner].status().role, "candidate")
        cluster.network.heal()
        cluster.run(1.0)
        self.assertEqual(leader.status().role, "leader")
        self.assertEqual([n.status().current_term for n in cluster.nodes.values()], [term] * 3)
        self.assertEqual(cluster.nodes[loner].status().leader_id, leader.node_id)

    def test_check_quorum_steps_down_isolated_leader_and_readiness_drops(self):
        cluster = Cluster(3, seed=7)
        leader = cluster.leader()
        cluster.network.isolate(leader.node_id)
        cluster.run(0.4)
        status = leader.status()
        self.assertNotEqual(status.role, "leader")
        self.assertFalse(status.has_quorum)
        new = cluster.leader()
        self.assertNotEqual(new.node_id, leader.node_id)
        self.assertTrue(new.status().has_quorum)

    def test_status_peer_progress_and_log_entries(self):
        cluster = Cluster(3, seed=8)
        leader = cluster.leader()
        for i in range(3):
            leader.propose(command(i))
        cluster.run(0.1)
        status = leader.status()
        self.assertEqual(
            (status.last_log_index, status.first_log_index, status.commit_index), (4, 1, 4)
        )
        progress = leader.peer_progress()
        self.assertEqual(set(progress), set(cluster.ids) - {leader.node_id})
        for peer in progress.values():
            self.assertEqual((peer.match_index, peer.next_index), (4, 5))
            self.assertIsNotNone(peer.last_contact_seconds)
            self.assertLess(peer.last_contact_seconds, 0.1)
        entries = leader.log_entries(2, 2)
        self.assertEqual([(e.index, int(e.command or b"0")) for e in entries], [(2, 0), (3, 1)])
        self.assertTrue(leader.log_entries(0, 100)[0].is_noop)
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        self.assertEqual(follower.peer_progress(), {})
        self.assertEqual(follower.status().leader_address, address(leader.node_id))

    def test_observers_hear_role_and_applied(self):
        cluster = Cluster(1)
        events = []
        cluster.nodes[1].add_observer(events.append)
        cluster.run(0.31)
        # It became leader and applied the no-op.
        self.assertIn("role", events)
        self.assertIn("applied", events)

    def test_nodes_held_together_past_an_election_timeout_keep_their_leader(self):
        # All three reactors held 0.4 s at once (a large apply on every node), the
        # leader's a little longer: every timer fires late, and the followers do not
        # stand against a leader that could not speak.
        cluster = Cluster(3, seed=21)
        leader = cluster.leader()
        term = leader.status().current_term
        cluster.network.isolate(leader.node_id)  # nothing it sends arrives yet
        cluster.clock.advance(0.4)
        cluster.run(0.02)
        cluster.network.heal()
        cluster.run(1.0)
        self.assertEqual(cluster.leaders(), [leader])
        self.assertEqual(leader.status().current_term, term)


class QuorumConfirmationTests(unittest.TestCase):
    """A leader's `quorum_confirmed_at`: when a majority last accepted it, counted from
    the send time of the requests they answered (what the leader's worker lease and
    the fence rely on)."""

    def test_a_single_node_confirms_itself_now(self):
        cluster = Cluster(1)
        leader = cluster.leader()
        self.assertEqual(leader.status().quorum_confirmed_at, cluster.clock.seconds())

    def test_a_healthy_leader_is_confirmed_within_a_heartbeat_and_followers_never(self):
        cluster = Cluster(3, seed=11)
        leader = cluster.leader()
        for _ in range(20):
            cluster.run(0.05)
            confirmed = leader.status().quorum_confirmed_at
            self.assertGreaterEqual(confirmed, cluster.clock.seconds() - 0.06)
        for node in cluster.nodes.values():
            if node is not leader:
                self.assertIsNone(node.status().quorum_confirmed_at)

    def test_answers_count_from_when_the_request_was_sent(self):
        cluster = Cluster(3, seed=12)
        leader = cluster.leader()
        cluster.network.latency = 0.05  # a round trip takes 0.1 s
        cluster.run(1.0)
        self.assertEqual(leader.status().role, "leader")
        lag = cluster.clock.seconds() - leader.status().quorum_confirmed_at
        self.assertGreaterEqual(lag, 0.1 - 1e-9)  # never the answer's arrival
        self.assertLessEqual(lag, 0.1 + DEFAULT_TIMINGS.heartbeat_interval + 0.01)

    def test_a_cut_off_leader_is_confirmed_no_later_than_the_cut(self):
        cluster = Cluster(3, seed=13)
        leader = cluster.leader()
        cut_at = cluster.clock.seconds()
        cluster.network.isolate(leader.node_id)
        cluster.run(0.1)  # still leading for a while (check-quorum has not fired)
        self.assertEqual(leader.status().role, "leader")
        self.assertLessEqual(leader.status().quorum_confirmed_at, cut_at)
        cluster.run(0.5)
        self.assertIsNone(leader.status().quorum_confirmed_at)

    def test_one_follower_is_enough_in_three(self):
        cluster = Cluster(3, seed=14)
        leader = cluster.leader()
        loner = next(i for i in cluster.ids if i != leader.node_id)
        cluster.network.isolate(loner)
        cluster.run(1.0)
        confirmed = leader.status().quorum_confirmed_at
        self.assertGreaterEqual(confirmed, cluster.clock.seconds() - 0.06)


class ProposalErrorTests(unittest.TestCase):
    """How a proposal fails: not leader, overload, timeout, lost leadership, stop, disk."""

    def test_not_leader_names_the_leader_address(self):
        cluster = Cluster(3, seed=9)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        error = self.failureResultOf(follower.propose(command(1)), NotLeader).value
        self.assertEqual(error.leader_address, address(leader.node_id))
        self.assertEqual(error.message, f"Not the leader. Try {address(leader.node_id)}")

    def test_not_leader_without_known_leader(self):
        cluster = Cluster(3, seed=9)
        error = self.failureResultOf(cluster.nodes[1].propose(command(1)), NotLeader).value
        self.assertIsNone(error.leader_address)
        self.assertEqual(error.message, "Not the leader. Leader unknown, retry later")

    def test_overloaded_at_once_when_queue_full(self):
        cluster = Cluster(1, storage_factory=StallingStorage)
        node = cluster.nodes[1]
        cluster.run(0.31)
        self.assertEqual(node.status().role, "leader")
        waiting = [node.propose(command(i)) for i in range(256)]
        overloaded = node.propose(command(256))
        self.failureResultOf(overloaded, Overloaded)
        self.assertEqual([d for d in waiting if d.called], [])

    def test_commit_timeout_after_five_seconds_with_stalled_disk(self):
        cluster = Cluster(1, storage_factory=StallingStorage)
        node = cluster.nodes[1]
        cluster.run(0.31)
        d = node.propose(command(1))
        cluster.clock.advance(4.9)
        self.assertNoResult(d)
        cluster.clock.advance(0.11)
        self.failureResultOf(d, CommitTimeout)
        # The entry stays in the log; only the waiter gave up.
        self.assertEqual(node.status().last_log_index, 2)
        self.assertIsNotNone(node.propose(command(2)))

    def test_leadership_lost_when_leader_is_cut_off(self):
        cluster = Cluster(3, seed=10)
        leader = cluster.leader()
        cluster.network.isolate(leader.node_id)
        d = leader.propose(command(1))
        cluster.run(0.4)
        self.failureResultOf(d, LeadershipLost)

    def test_raft_stopped_after_stop(self):
        cluster = Cluster(1)
        node = cluster.nodes[1]
        cluster.run(0.31)
        stalled = Cluster(1, storage_factory=StallingStorage)
        stalled.run(0.31)
        waiting = stalled.nodes[1].propose(command(1))
        stalled.stop(1)
        self.failureResultOf(waiting, RaftStopped)
        cluster.stop(1)
        self.failureResultOf(node.propose(command(1)), RaftStopped)
        error = self.failureResultOf(node.handle(None), RaftStopped).value
        self.assertEqual(error.message, "Raft loop is not running")

    def test_storage_failure_stops_serving_and_never_acknowledges(self):
        cluster = Cluster(1, storage_factory=FailingStorage)
        node = cluster.nodes[1]
        cluster.run(0.31)
        cluster.storages[1].broken = True
        d = node.propose(command(1))
        self.failureResultOf(d, StorageFailed)
        self.assertEqual(node.status().role, "follower")
        self.assertFalse(node.status().has_quorum)
        self.assertEqual(cluster.machines[1].values, [])
        self.failureResultOf(node.propose(command(2)), StorageFailed)
        cluster.run(2.0)  # no timer fires any more: no election, no further write
        self.assertEqual(cluster.storage_failures[1], [DISK_FULL])

    def test_follower_with_stalled_disk_never_acknowledges(self):
        storages = iter([MemoryStorage(), MemoryStorage(), StallingStorage()])
        cluster = Cluster(3, seed=11, storage_factory=lambda: next(storages))
        cluster.stop(3)
        leader = cluster.leader()
        cluster.start(3)
        cluster.stop(next(i for i in (1, 2) if i != leader.node_id))
        d = leader.propose(command(1))
        cluster.run(1.0)
        # The only live follower never makes anything durable, so it never answers: the
        # entry never commits and the leader, hearing from no majority, steps down.
        self.failureResultOf(d, LeadershipLost)
        self.assertEqual(cluster.machines[leader.node_id].values, [])


class StorageFailureTests(unittest.TestCase):
    """A failed durable write is reported once, with the store's message, and nothing
    written after it is acknowledged (the node ends its process on that report)."""

    def setUp(self) -> None:
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def critical_lines(self) -> list[str]:
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_level") == LogLevel.critical
            and event.get("log_namespace") == "jobsched.raft.service"
        ]

    def test_every_waiting_proposal_fails_and_the_report_comes_once(self):
        cluster = Cluster(1, storage_factory=FailingStorage)
        node = cluster.nodes[1]
        cluster.run(0.31)
        cluster.storages[1].broken = True
        waiting = [node.propose(command(i)) for i in range(5)]  # one write, one failure
        cluster.run(0.1)
        for d in waiting:
            self.failureResultOf(d, StorageFailed)
        self.failureResultOf(node.handle(None), StorageFailed)
        self.assertEqual(cluster.storage_failures[1], [DISK_FULL])
        self.assertEqual(cluster.machines[1].values, [])
        self.assertEqual(
            self.critical_lines(), [f"Raft storage failed, this node stops: {DISK_FULL}"]
        )

    def test_a_follower_whose_disk_fails_never_acknowledges_the_entry(self):
        cluster = Cluster(3, seed=21, storage_factory=FailingStorage)
        leader = cluster.leader()
        broken, healthy = (i for i in cluster.ids if i != leader.node_id)
        cluster.storages[broken].broken = True
        d = leader.propose(command(7))
        cluster.run(0.5)
        self.assertEqual(self.successResultOf(d), leader.status().last_log_index)
        self.assertEqual(cluster.storage_failures[broken], [DISK_FULL])
        self.assertEqual(cluster.storage_failures[healthy], [])
        self.assertEqual(cluster.machines[broken].values, [])
        self.assertEqual(cluster.machines[healthy].values, [7])
        progress = leader.peer_progress()
        self.assertLess(progress[broken].match_index, leader.status().last_log_index)

    def test_without_a_callback_the_service_only_stops_serving(self):
        storage, clock = FailingStorage(), task.Clock()
        node = RaftService(1, {}, address(1), storage, None, Recorder(), clock)
        node.startService()
        clock.advance(1.0)
        self.assertEqual(node.status().role, "leader")
        storage.broken = True
        self.failureResultOf(node.propose(command(1)), StorageFailed)
        self.assertEqual(node.status().role, "follower")
        self.failureResultOf(node.propose(command(2)), StorageFailed)


class CompactionTests(unittest.TestCase):
    """Log compaction and a lagging node caught up by a chunked snapshot."""

    def test_compaction_and_chunked_snapshot_catch_up(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        cluster = Cluster(3, seed=12, limits=RaftLimits(snapshot_chunk_bytes=512))
        leader = cluster.leader()
        lagging = next(i for i in cluster.ids if i != leader.node_id)
        cluster.stop(lagging)
        cluster.run(COMPACTION_PATIENCE_SECONDS)  # long enough silent not to count
        for batch in range(11):
            ds = [leader.propose(command(batch * 100 + i)) for i in range(100)]
            cluster.run(0.05)
            self.assertEqual([d for d in ds if not d.called], [])
        status = leader.status()
        self.assertEqual(status.last_applied, 1101)
        self.assertEqual(status.first_log_index, 1002)  # compacted once more than 1000 applied
        stored = cluster.storages[leader.node_id].load()
        self.assertEqual((stored.snapshot.index, stored.entries[0].index), (1001, 1002))
        before = cluster.network.delivered
        node = cluster.start(lagging)
        cluster.run(0.5)
        self.assertEqual(cluster.machines[lagging].values, list(range(1100)))
        self.assertEqual(node.status().last_applied, 1101)
        self.assertGreater(
            cluster.network.delivered - before, len(cluster.machines[lagging].snapshot()) // 512
        )
        installed = [
            formatEvent(event)
            for event in events
            if event.get("node") == lagging and "Installed a snapshot" in event["log_format"]
        ]
        size = len(stored.snapshot.data)
        self.assertEqual(
            installed,
            [
                f"Installed a snapshot from the leader: index 1001, {size} bytes,"
                " restored in 0.00s, slices: 1"
            ],
        )
        d = leader.propose(command(5000))
        cluster.run(0.1)
        self.successResultOf(d)
        self.assertEqual(cluster.machines[lagging].values[-1], 5000)

    def lagging_node_behind_a_compaction(self, clock: task.Clock | None = None):
        """A cluster whose leader compacted 1,100 entries while one node was down; that
        node's id, and the leader."""
        cluster = Cluster(3, seed=12, limits=RaftLimits(snapshot_chunk_bytes=4096), clock=clock)
        leader = cluster.leader()
        lagging = next(i for i in cluster.ids if i != leader.node_id)
        cluster.stop(lagging)
        cluster.run(COMPACTION_PATIENCE_SECONDS)
        for batch in range(11):
            for i in range(100):
                leader.propose(command(batch * 100 + i))
            cluster.run(0.05)
        self.assertEqual(leader.status().first_log_index, 1002)
        return cluster, lagging, leader

    def test_a_leaders_snapshot_is_restored_over_many_turns_while_later_entries_wait(self):
        """A follower restores a leader's snapshot a slice a reactor turn: meanwhile
        its state stays as it was (and the applied index it reports, which its
        worker's heartbeats carry), entries after the snapshot are committed there but
        applied only once it is restored, and it does not stand for election, even
        with its leader gone; once restored it does."""
        cluster, lagging, leader = self.lagging_node_behind_a_compaction(TurnsTakeTime())
        other = next(i for i in cluster.ids if i not in (lagging, leader.node_id))
        node = cluster.start(lagging)
        machine = cluster.machines[lagging]
        # 0.45 s of turns: the first election timeout after the leader goes falls in
        # it, the third (when a node that may not lead stands regardless) after it.
        machine.restore_steps = 450
        seen = []

        def look() -> None:
            seen.append((len(machine.values), node.status()))
            if len(seen) == 1:
                leader.propose(command(5000))
            elif len(seen) == 20:  # 5000 committed by now; then the cluster goes
                cluster.stop(leader.node_id)
                cluster.stop(other)

        machine.on_restore_step = look
        cluster.run_until(lambda: len(seen) == 450, step=TURN_SECONDS)
        self.assertEqual({applied for applied, _ in seen}, {0})
        self.assertEqual({status.role for _, status in seen}, {"follower"})
        self.assertEqual(seen[-1][1].commit_index, 1102)  # 5000's entry, not yet applied
        self.assertLess(max(status.last_applied for _, status in seen), 1001)
        cluster.run(TURN_SECONDS)
        self.assertEqual(machine.values, [*range(1100), 5000])
        self.assertEqual(node.status().last_applied, 1102)
        cluster.run_until(lambda: node.status().role != "follower")  # alone, it stands

    def test_a_leaders_snapshot_that_cannot_be_restored_stops_the_node(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        cluster, lagging, leader = self.lagging_node_behind_a_compaction()
        node = cluster.start(lagging)
        machine = cluster.machines[lagging]

        def broken(data: bytes) -> None:
            raise ValueError("damaged")

        machine.restore = broken
        cluster.run_until(lambda: cluster.storage_failures[lagging])
        self.assertEqual(cluster.storage_failures[lagging], ["not a Recorder's snapshot: damaged"])
        critical = [
            formatEvent(event)
            for event in events
            if event.get("log_level") == LogLevel.critical and event.get("node") == lagging
        ]
        self.assertEqual(
            critical,
            [
                "Restoring the leader's snapshot failed, this node stops: "
                "not a Recorder's snapshot: damaged"
            ],
        )
        self.assertEqual(machine.values, [])
        self.failureResultOf(node.propose(command(1)), StorageFailed)
        self.assertEqual(leader.status().role, "leader")

    def test_a_snapshot_built_in_steps_compacts_at_the_index_it_began_at(self):
        """A large state's snapshot takes several reactor turns: the log is compacted
        at the index the state had when the snapshot began, once it is complete."""
        cluster = Cluster(3, seed=12, limits=RaftLimits(compaction_threshold=50))
        for machine in cluster.machines.values():
            machine.snapshot_steps = 5
        leader = cluster.leader()
        follower = next(i for i in cluster.ids if i != leader.node_id)
        for i in range(60):
            leader.propose(command(i))
        storages = cluster.storages
        cluster.run_until(lambda: all(storages[i].load().snapshot for i in cluster.ids))
        stored = storages[leader.node_id].load().snapshot
        values = stored.data.decode().split(",")
        self.assertEqual(values, [str(i) for i in range(stored.index - 1)])  # 1: the no-op
        self.assertEqual(stored.index, leader.status().first_log_index - 1)
        self.assertEqual(cluster.machines[leader.node_id].builds_begun, 1)
        self.assertEqual(storages[follower].load().snapshot.data, stored.data)

    def test_own_compactions_may_be_kept_but_an_installed_snapshot_is_written(self):
        """A store may keep the entries of the node's own compaction (it holds them)
        instead of its snapshot; a leader's snapshot installed must be written."""
        cluster = Cluster(
            3, seed=12, limits=RaftLimits(compaction_threshold=50), storage_factory=RecordingStorage
        )
        leader = cluster.leader()
        lagging = next(i for i in cluster.ids if i != leader.node_id)
        cluster.stop(lagging)
        cluster.run(COMPACTION_PATIENCE_SECONDS)
        for i in range(60):
            leader.propose(command(i))
        cluster.run_until(lambda: leader.status().first_log_index > 1)
        index = leader.status().first_log_index - 1
        self.assertEqual(cluster.storages[leader.node_id].saved, [("compaction", index)])
        cluster.start(lagging)
        cluster.run_until(lambda: cluster.nodes[lagging].status().last_applied >= index)
        self.assertEqual(cluster.storages[lagging].saved, [("snapshot", index)])

    def test_a_follower_silent_for_seconds_keeps_the_entries_it_needs(self):
        """A follower busy for a while (installing a large snapshot, say) catches up
        from the log afterwards, instead of needing yet another snapshot."""
        cluster = Cluster(3, seed=12)
        leader = cluster.leader()
        busy = next(i for i in cluster.ids if i != leader.node_id)
        cluster.network.isolate(busy)
        for batch in range(11):
            [leader.propose(command(batch * 100 + i)) for i in range(100)]
            cluster.run(0.05)
        cluster.run(COMPACTION_PATIENCE_SECONDS / 2)
        self.assertEqual(leader.status().last_applied, 1101)
        self.assertEqual(leader.status().first_log_index, 1)  # not compacted yet
        cluster.network.heal()
        cluster.run(0.5)
        self.assertEqual(cluster.machines[busy].values, list(range(1100)))
        self.assertEqual(cluster.network.delivered_kinds["InstallSnapshotRequest"], 0)
        [leader.propose(command(5000 + i)) for i in range(2)]
        cluster.run(0.1)
        self.assertEqual(leader.status().first_log_index, 1002)  # compacted once it could

    def test_the_next_leader_catches_a_lagging_follower_up_from_its_log(self):
        """Followers compact only past what the leader says a live follower lacks: when
        the leader dies, its successor still has those entries, and the lagging node
        does not stall the new leader's first seconds installing a whole snapshot."""
        cluster = Cluster(3, seed=12)
        leader = cluster.leader()
        lagging, successor = (i for i in cluster.ids if i != leader.node_id)
        cluster.network.isolate(lagging)
        for batch in range(11):
            [leader.propose(command(batch * 100 + i)) for i in range(100)]
            cluster.run(0.05)
        cluster.run_until(lambda: cluster.nodes[successor].status().last_applied == 1101)
        self.assertEqual(cluster.nodes[successor].status().first_log_index, 1)
        cluster.stop(leader.node_id)
        cluster.network.heal()
        cluster.run_until(lambda: cluster.machines[lagging].values == list(range(1100)))
        new_leader = cluster.nodes[successor]
        self.assertEqual(new_leader.status().role, "leader")
        self.assertEqual(cluster.network.delivered_kinds["InstallSnapshotRequest"], 0)
        [new_leader.propose(command(5000 + i)) for i in range(2)]
        cluster.run(0.1)
        self.assertEqual(new_leader.status().first_log_index, 1002)  # compacted once it could

    def test_a_live_follower_keeps_a_long_backlog_but_not_an_endless_one(self):
        """Single writes at a thousand a second fill four thresholds while a follower
        installs a snapshot of 100,000 jobs (3 s): it must still find its entries; the
        log stops growing for it at COMPACTION_BACKLOG_THRESHOLDS."""
        threshold = 50
        cluster = Cluster(3, seed=12, limits=RaftLimits(compaction_threshold=threshold))
        leader = cluster.leader()
        busy = next(i for i in cluster.ids if i != leader.node_id)
        cluster.network.isolate(busy)
        isolated_at = cluster.clock.seconds()
        bound = COMPACTION_BACKLOG_THRESHOLDS * threshold
        for batch in range(bound // 100):
            [leader.propose(command(batch * 100 + i)) for i in range(100)]
            cluster.run(0.01)
        self.assertGreater(leader.status().last_applied, 4 * threshold)
        self.assertEqual(leader.status().first_log_index, 1)  # kept for the busy follower
        for i in range(threshold + 1):
            leader.propose(command(bound + i))
        cluster.run(0.05)
        self.assertGreater(leader.status().first_log_index, 1)  # compacted regardless
        self.assertLess(cluster.clock.seconds() - isolated_at, COMPACTION_PATIENCE_SECONDS)

    def test_no_hint_at_a_leader_not_heard_from_within_an_election_timeout(self):
        """Right after the leader dies, a follower must not send clients to it."""
        cluster = Cluster(3, seed=9)
        leader = cluster.leader()
        follower, other = [n for n in cluster.nodes.values() if n is not leader]
        cluster.network.isolate(leader.node_id)
        cluster.network.isolate(other.node_id)  # so that no new leader can be elected
        self.assertEqual(follower.status().leader_address, address(leader.node_id))
        cluster.run(cluster.timings.election_timeout_max + 0.01, step=0.001)
        error = self.failureResultOf(follower.propose(command(1)), NotLeader).value
        self.assertIsNone(error.leader_address)
        self.assertIsNone(follower.status().leader_address)
        self.assertEqual(error.message, "Not the leader. Leader unknown, retry later")


class ApplyBacklogTests(unittest.TestCase):
    """A follower answers AppendEntries before it applies what they commit, and far
    behind applies its backlog a slice per reactor turn."""

    def test_a_long_backlog_is_applied_a_slice_per_turn_after_the_answer(self):
        clock = task.Clock()
        machine = Recorder()
        node = RaftService(2, {1: address(1)}, address(2), MemoryStorage(), None, machine, clock)
        node.startService()
        self.addCleanup(node.stopService)
        backlog = [LogEntry(1, i + 1, command(i)) for i in range(300)]
        answer = node.handle(AppendEntriesRequest(1, 1, 0, 0, backlog, 300))
        self.assertTrue(self.successResultOf(answer).success)
        self.assertEqual(machine.values, [])  # the leader did not wait for the applying
        limit = RaftLimits().max_apply_entries
        for turn in (1, 2, 3):
            run_one_turn(clock)
            self.assertEqual(machine.values, list(range(min(300, turn * limit))))
        self.assertEqual(node.status().last_applied, 300)


def run_one_turn(clock: task.Clock) -> None:
    """Run the calls due now, not those they schedule (as a reactor's turn does; a
    task.Clock's advance(0) would run those too)."""
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        if call.active():
            clock.calls.remove(call)
            call.called = True
            call.func(*call.args, **call.kw)


class DrainingNodeTests(unittest.TestCase):
    """A node that refuses leadership (it drains) votes and follows; it leads only as a
    last resort, when no other node can win, and then only until a peer can take over."""

    def test_a_node_refusing_leadership_never_wins_an_election(self):
        for seed in range(1, 6):
            cluster = Cluster(3, seed=seed)
            leader = cluster.leader()
            refusing, other = [n for n in cluster.nodes.values() if n is not leader]
            refusing.refuse_leadership()
            cluster.stop(leader.node_id)
            cluster.run_until(lambda other=other: other.status().role == "leader")
            cluster.run_until(lambda r=refusing, o=other: r.status().leader_id == o.node_id)
            self.assertEqual(refusing.status().role, "follower")

    def test_alone_with_a_dead_leader_it_never_raises_the_term(self):
        cluster = Cluster(3, seed=4)
        leader = cluster.leader()
        refusing, other = [n for n in cluster.nodes.values() if n is not leader]
        refusing.refuse_leadership()
        term = refusing.status().current_term
        cluster.stop(leader.node_id)
        cluster.stop(other.node_id)
        cluster.run(3.0)
        self.assertEqual(refusing.status().current_term, term)

    def test_it_leads_as_a_last_resort_and_hands_over(self):
        """The other survivor's log is behind, so it cannot win: without the drained
        node the cluster would stay leaderless until the dead leader came back."""
        cluster = Cluster(3, seed=21)
        leader = cluster.leader()
        refusing, behind = sorted(
            (n for n in cluster.nodes.values() if n is not leader), key=lambda n: n.node_id
        )
        refusing.refuse_leadership()
        cluster.network.isolate(behind.node_id)
        committed = leader.propose(command(7))
        cluster.run(0.2)
        self.successResultOf(committed)
        cluster.stop(leader.node_id)
        cluster.network.heal()
        led = []
        cluster.run_until(lambda: led.append(refusing.status().role) or (
            behind.status().role == "leader"))  # fmt: skip
        self.assertIn("leader", led)
        cluster.run_until(lambda: refusing.status().leader_id == behind.node_id)
        self.assertEqual(refusing.status().role, "follower")
        d = behind.propose(command(8))
        cluster.run(0.2)
        self.successResultOf(d)
        self.assertEqual(cluster.machines[refusing.node_id].values[-2:], [7, 8])

    def test_a_transfer_never_picks_or_reaches_it(self):
        cluster = Cluster(3, seed=13)
        leader = cluster.leader()
        refusing, other = sorted(
            (n for n in cluster.nodes.values() if n is not leader), key=lambda n: n.node_id
        )
        refusing.refuse_leadership()
        picked = leader.transfer_leadership(0, exclude=frozenset({refusing.node_id}))
        cluster.run(0.5)
        self.assertEqual(self.successResultOf(picked)[2], other.node_id)
        new_leader = cluster.nodes[other.node_id]
        named = new_leader.transfer_leadership(refusing.node_id)
        cluster.run(3.0)
        success, _message, _leader = self.successResultOf(named)
        self.assertFalse(success)
        self.assertNotEqual(refusing.status().role, "leader")


class RoleLogTests(unittest.TestCase):
    """One info line when an election starts, a leader wins, and a transfer is done."""

    def setUp(self) -> None:
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, node_id: int) -> list[str]:
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_level") == LogLevel.info
            and event.get("log_namespace") == "jobsched.raft.service"
            and event.get("node") == node_id
        ]

    def test_election_and_leader_are_logged_once_each(self):
        cluster = Cluster(3, seed=9)
        leader = cluster.leader()
        term = leader.status().current_term
        leader_lines = self.lines(leader.node_id)
        self.assertEqual(leader_lines.count(f"Starting an election for term {term}"), 1)
        self.assertEqual(leader_lines.count(f"Elected leader for term {term}"), 1)
        for node in cluster.nodes.values():
            if node is not leader:
                self.assertEqual(
                    self.lines(node.node_id),
                    [f"Following node {leader.node_id}, leader for term {term}"],
                )

    def test_transfer_is_logged_by_the_old_leader(self):
        cluster = Cluster(3, seed=13)
        leader = cluster.leader()
        target = max(i for i in cluster.ids if i != leader.node_id)
        d = leader.transfer_leadership(target)
        cluster.run(0.5)
        self.assertTrue(self.successResultOf(d)[0])
        self.assertIn(f"Leadership transferred to node {target}", self.lines(leader.node_id))

    def test_a_leader_disconnected_twice_is_logged_once(self):
        """Its peer-port connection and its gRPC stream both end: one line."""
        cluster = Cluster(3, seed=9)
        leader = cluster.leader()
        term = leader.status().current_term
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        follower.leader_disconnected(leader.node_id, term)
        follower.leader_disconnected(leader.node_id, term)
        said = f"Leader {leader.node_id} disconnected; standing for election unless it speaks again"
        self.assertEqual(self.lines(follower.node_id).count(said), 1)


class LeadershipTransferTests(unittest.TestCase):
    """transfer_leadership: named or chosen target, refusals, a target that lags."""

    def test_transfer_to_named_target(self):
        cluster = Cluster(3, seed=13)
        leader = cluster.leader()
        target = max(i for i in cluster.ids if i != leader.node_id)
        d = leader.transfer_leadership(target)
        # Proposals are refused while transferring.
        error = self.failureResultOf(leader.propose(command(1)), NotLeader).value
        self.assertEqual(error.leader_address, address(target))
        cluster.run(0.5)
        self.assertEqual(
            self.successResultOf(d), (True, f"Leadership transferred to node {target}", target)
        )
        self.assertEqual(cluster.nodes[target].status().role, "leader")
        self.assertEqual(leader.status().leader_id, target)

    def test_transfer_auto_selects_most_caught_up_live_peer(self):
        cluster = Cluster(3, seed=14)
        leader = cluster.leader()
        peers = [i for i in cluster.ids if i != leader.node_id]
        cluster.stop(peers[0])
        cluster.run(0.4)  # peers[0] no longer counts as live
        d = leader.transfer_leadership(0)
        cluster.run(0.5)
        self.assertEqual(
            self.successResultOf(d), (True, f"Leadership transferred to node {peers[1]}", peers[1])
        )

    def test_transfer_errors(self):
        single = Cluster(1)
        single.run(0.31)
        self.assertEqual(
            self.successResultOf(single.nodes[1].transfer_leadership(0)),
            (False, "No peers available for transfer", 0),
        )
        self.assertEqual(
            self.successResultOf(single.nodes[1].transfer_leadership(1)),
            (False, "Unknown target node 1", 0),
        )
        cluster = Cluster(3, seed=15)
        leader = cluster.leader()
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        self.assertEqual(
            self.successResultOf(follower.transfer_leadership(0))[:2], (False, "Not the leader")
        )
        self.assertEqual(
            self.successResultOf(leader.transfer_leadership(9)),
            (False, "Unknown target node 9", 0),
        )

    def test_transfer_target_that_cannot_catch_up(self):
        cluster = Cluster(3, seed=16)
        leader = cluster.leader()
        target = next(i for i in cluster.ids if i != leader.node_id)
        cluster.network.isolate(target)
        committed = leader.propose(command(1))
        cluster.run(0.1)
        # Committed by the leader and the other follower; the target lacks it.
        self.successResultOf(committed)
        d = leader.transfer_leadership(target)
        cluster.run(1.9)
        self.assertNoResult(d)
        cluster.run(0.2)
        self.assertEqual(
            self.successResultOf(d),
            (False, f"Target node {target} did not catch up within 2s", leader.node_id),
        )
        ok = leader.propose(command(2))  # accepting proposals again
        cluster.run(0.1)
        self.successResultOf(ok)
