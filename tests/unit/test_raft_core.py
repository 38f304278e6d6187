"""RaftCore driven message by message (N cores on a simulated network: test_simulation.py).

No reactor here: time is a float passed in, randomness is seeded.
"""

from __future__ import annotations

import random

from twisted.trial import unittest

from jobsched.raft.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    RaftCore,
    RaftLimits,
    RaftTimings,
)
from jobsched.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    LogEntry,
    TimeoutNowRequest,
    VoteRequest,
    VoteResponse,
)
from jobsched.raft.storage import MemoryStorage, StoredState

TIMINGS = RaftTimings()


def command(n: int, size: int = 0) -> bytes:
    """An opaque command naming `n` (Raft never looks inside), padded to `size` bytes."""
    return f"{n}:".encode().ljust(size, b"x")


def command_number(data: bytes) -> int:
    return int(data.split(b":")[0])


def entries(*terms: int, start: int = 1) -> list:
    return [LogEntry(t, start + i, command(start + i)) for i, t in enumerate(terms)]


class Node:
    """A core plus the durable store and applied list the service would keep for it."""

    def __init__(self, node_id, peers, storage=None, now=0.0, seed=0, limits=RaftLimits()):
        self.storage = storage or MemoryStorage()
        self.applied: list = []
        self.node_id = node_id
        self.peers = peers
        self.core = RaftCore(
            node_id, peers, self.storage.load(), now, random.Random(seed), TIMINGS, limits
        )
        if self.core.snapshot:
            self.applied = decode(self.core.snapshot.data)

    def flush(self) -> list:
        """Carry out every Ready (writes durable at once); returns the messages to send."""
        out = []
        while True:
            ready = self.core.take_ready()
            if ready is None:
                return out
            self.write(ready)
            out.extend(ready.messages)
            if ready.restore:
                self.applied = decode(ready.restore.data)
            for entry in ready.committed:
                if not entry.is_noop:
                    self.applied.append(command_number(entry.command))
            if ready.committed:
                self.core.applied_to(ready.committed[-1].index)
                if self.core.compaction_due():
                    self.core.compact(self.core.applied_index, encode(self.applied))

    def write(self, ready) -> None:
        if ready.hard_state:
            self.storage.save_hard_state(*ready.hard_state)
        if ready.snapshot:
            s = ready.snapshot
            self.storage.save_snapshot(s.index, s.term, s.data)
        if ready.truncate_from:
            self.storage.truncate(ready.truncate_from)
        if ready.entries:
            self.storage.append(ready.entries)
        if ready.has_writes:
            self.core.persisted(ready.seq)


def encode(values) -> bytes:
    return ",".join(map(str, values)).encode()


def decode(data: bytes) -> list:
    return [int(v) for v in data.decode().split(",")] if data else []


def cluster(size: int, seed: int = 0, limits: RaftLimits = RaftLimits()) -> dict:
    ids = list(range(1, size + 1))
    return {i: Node(i, [p for p in ids if p != i], seed=seed * 100 + i, limits=limits) for i in ids}


def pump(nodes: dict, now: float, blocked=lambda src, dst: False) -> int:
    """Deliver every message at once until the cluster is quiet; returns how many."""
    count = 0
    queue = [(n.node_id, m) for n in nodes.values() for m in n.flush()]
    while queue:
        src, (dst, request) = queue.pop(0)
        count += 1
        if blocked(src, dst) or dst not in nodes:
            nodes[src].core.send_failed(dst, request, now)
        else:
            response = nodes[dst].core.receive_request(request, now)
            queue.extend((dst, m) for m in nodes[dst].flush())
            if blocked(dst, src):
                nodes[src].core.send_failed(dst, request, now)
            else:
                nodes[src].core.receive_response(dst, request, response, now)
        queue.extend((src, m) for m in nodes[src].flush())
    return count


def run(nodes: dict, now: float, seconds: float, blocked=lambda s, d: False) -> float:
    """Tick every node each 10 ms and deliver at once; returns the new time."""
    for _ in range(round(seconds / 0.01)):
        now += 0.01
        for node in nodes.values():
            node.core.tick(now)
        pump(nodes, now, blocked=blocked)
    return now


def deliver(nodes: dict, src: int, messages: list, now: float) -> None:
    """Hand each message to its destination and its answer back to `src`."""
    for dst, request in messages:
        response = nodes[dst].core.receive_request(request, now)
        nodes[src].core.receive_response(dst, request, response, now)


def storage_with(state: StoredState) -> MemoryStorage:
    storage = MemoryStorage()
    storage.save_hard_state(state.term, state.voted_for)
    storage.append(state.entries)
    return storage


def snapshot_chunks(data: bytes, index: int, term: int, size: int, leader_term: int = 2):
    offsets = list(range(0, len(data), size))
    return [
        InstallSnapshotRequest(
            leader_term, 1, index, term, off, data[off : off + size], off == offsets[-1]
        )
        for off in offsets
    ]


class RaftCoreTestCase(unittest.TestCase):
    """Shared helper: elect a chosen node."""

    def elect(self, nodes: dict, node_id: int, now: float = 1.0) -> float:
        """Make `node_id` leader by firing its election timer first."""
        nodes[node_id].core.tick(now + 0.3)
        pump(nodes, now + 0.3)
        self.assertEqual(nodes[node_id].core.role, LEADER)
        return now + 0.3


class ElectionAndCommitTests(RaftCoreTestCase):
    """Elections, votes, pre-votes, check-quorum and the commit rule."""

    def test_single_node_elects_itself_and_commits_on_durable_append(self):
        node = Node(1, [])
        node.core.tick(0.1)
        self.assertEqual(node.core.role, FOLLOWER)  # before the first election timeout
        node.core.tick(0.3)
        self.assertEqual((node.core.role, node.core.term), (LEADER, 1))
        ready = node.core.take_ready()
        self.assertEqual(ready.hard_state, (1, 1))
        self.assertTrue(ready.entries[0].is_noop)
        self.assertEqual(node.core.commit_index, 0)  # not durable yet
        node.core.persisted(ready.seq)
        self.assertEqual(node.core.commit_index, 1)
        entry = node.core.propose(command(5), 0.4)
        self.assertEqual((entry.index, node.core.commit_index), (2, 1))
        node.flush()
        self.assertEqual(node.core.commit_index, 2)
        self.assertEqual(node.applied, [5])

    def test_new_leader_appends_noop_of_its_term_at_once(self):
        nodes = cluster(3)
        self.elect(nodes, 1)
        first = nodes[1].core.log.entry(1)
        self.assertTrue(first.is_noop)
        self.assertEqual((first.term, nodes[1].core.term), (1, 1))
        self.elect(nodes, 2, now=5.0)
        core = nodes[2].core
        self.assertEqual(core.term, 2)
        self.assertTrue(core.log.entry(2).is_noop)
        self.assertEqual(core.log.entry(2).term, 2)
        # The no-op committed, and with it nothing earlier pending.
        self.assertEqual(core.commit_index, 2)
        core.tick(5.3 + TIMINGS.heartbeat_interval)
        pump(nodes, 5.35)
        self.assertEqual([n.core.commit_index for n in nodes.values()], [2, 2, 2])

    def assertCommitNeedsStrictMajority(self, size: int, needed: int) -> None:
        nodes = cluster(size)
        self.elect(nodes, 1)
        leader = nodes[1]
        # Only `needed - 1` followers hear about the next entry: with the leader, a majority.
        reachable = set(range(2, needed + 1))
        leader.core.propose(command(1), 2.0)
        pump(nodes, 2.0, blocked=lambda s, d: s == 1 and d not in reachable)
        self.assertEqual(leader.core.commit_index, 2)
        reachable = set(range(2, needed))  # one fewer: no majority
        leader.core.propose(command(2), 2.1)
        pump(nodes, 2.1, blocked=lambda s, d: s == 1 and d not in reachable)
        self.assertEqual(leader.core.commit_index, 2)

    def test_commit_needs_both_nodes_of_two(self):
        self.assertCommitNeedsStrictMajority(size=2, needed=2)

    def test_commit_needs_three_nodes_of_four(self):
        self.assertCommitNeedsStrictMajority(size=4, needed=3)

    def test_commit_needs_three_nodes_of_five(self):
        self.assertCommitNeedsStrictMajority(size=5, needed=3)

    def test_leader_commits_by_counting_only_an_entry_of_its_term(self):
        stored = StoredState(term=2, entries=entries(1, 1))
        leader = Node(1, [2, 3], storage=storage_with(stored))
        leader.core.tick(1.0)
        for _ in range(2):  # pre-vote, then the real vote, both granted by everyone
            for dst, request in leader.flush():
                leader.core.receive_response(dst, request, VoteResponse(request.term, True), 1.0)
        appends = [(d, m) for d, m in leader.flush() if isinstance(m, AppendEntriesRequest)]
        self.assertEqual((leader.core.role, leader.core.term), (LEADER, 3))
        (_, request), _ = appends
        # A majority (leader + node 2) holds entry 2, but it is from term 1: no commit.
        leader.core.receive_response(2, request, AppendEntriesResponse(3, True, 2), 1.0)
        self.assertEqual(leader.core.commit_index, 0)
        leader.core.receive_response(2, request, AppendEntriesResponse(3, True, 3), 1.0)
        self.assertEqual(leader.core.commit_index, 3)

    def test_leader_counts_itself_only_once_durable(self):
        nodes = cluster(2)
        self.elect(nodes, 1)
        leader, follower = nodes[1], nodes[2]
        leader.core.propose(command(1), 2.0)
        ready = leader.core.take_ready()
        ((_peer, request),) = ready.messages
        response = follower.core.receive_request(request, 2.0)
        follower.flush()
        leader.core.receive_response(2, request, response, 2.0)
        # The follower has it, the leader's own copy is not durable.
        self.assertEqual(leader.core.commit_index, 1)
        leader.write(ready)
        self.assertEqual(leader.core.commit_index, 2)

    def test_vote_once_per_term_and_after_restart(self):
        storage = MemoryStorage()
        voter = Node(3, [1, 2], storage=storage)
        granted = voter.core.receive_request(VoteRequest(1, 1, 0, 0), 1.0)
        self.assertTrue(granted.vote_granted)
        voter.flush()
        self.assertFalse(voter.core.receive_request(VoteRequest(1, 2, 0, 0), 1.0).vote_granted)
        # The same candidate again.
        self.assertTrue(voter.core.receive_request(VoteRequest(1, 1, 0, 0), 1.0).vote_granted)
        restarted = Node(3, [1, 2], storage=storage)
        self.assertEqual((restarted.core.term, restarted.core.voted_for), (1, 1))
        self.assertFalse(restarted.core.receive_request(VoteRequest(1, 2, 0, 0), 1.0).vote_granted)
        self.assertTrue(restarted.core.receive_request(VoteRequest(2, 2, 0, 0), 1.0).vote_granted)

    def test_vote_refused_to_stale_log(self):
        voter = Node(3, [1, 2], storage=MemoryStorage())
        voter.core.receive_request(AppendEntriesRequest(2, 1, 0, 0, entries(1, 2), 0), 1.0)
        voter.flush()
        self.assertFalse(voter.core.receive_request(VoteRequest(3, 2, 5, 1), 5.0).vote_granted)
        self.assertFalse(voter.core.receive_request(VoteRequest(4, 2, 1, 2), 5.0).vote_granted)
        self.assertTrue(voter.core.receive_request(VoteRequest(5, 2, 2, 2), 5.0).vote_granted)

    def test_prevote_does_not_raise_term_and_lease_refuses_it(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        loner = nodes[3]
        now = run({1: nodes[1], 2: nodes[2]}, now, 1.0)  # node 3 hears nothing for 1 s
        loner.core.tick(now)
        self.assertEqual((loner.core.role, loner.core.term), (PRE_CANDIDATE, 1))
        (_, request), _ = loner.flush()
        self.assertTrue(request.pre_vote)
        self.assertEqual(request.term, 2)
        # Node 2 heard from the leader just now: it refuses without changing its term.
        response = nodes[2].core.receive_request(request, now)
        self.assertFalse(response.vote_granted)
        self.assertEqual(nodes[2].core.term, 1)
        self.assertFalse(nodes[1].core.receive_request(request, now).vote_granted)
        loner.core.receive_response(2, request, response, now)
        self.assertEqual((loner.core.role, loner.core.term), (PRE_CANDIDATE, 1))
        # Once the leader is silent for an election timeout, a pre-vote is granted.
        granted = nodes[2].core.receive_request(request, now + 0.2)
        self.assertTrue(granted.vote_granted)
        self.assertEqual((nodes[2].core.term, nodes[2].core.voted_for), (1, 1))

    def test_follower_ahead_stands_when_a_stale_peer_asks_for_its_vote(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        nodes[1].core.propose(command(1), now)
        messages = nodes[1].flush()
        deliver(nodes, 1, [m for m in messages if m[0] == 2], now)  # node 3 misses it
        del nodes[1]  # the leader dies
        behind, ahead = nodes[3].core, nodes[2].core
        now = behind.next_deadline()
        self.assertLess(now, ahead.next_deadline())  # node 2 would stand later
        behind.tick(now)
        (_, request), _ = nodes[3].flush()
        self.assertFalse(ahead.receive_request(request, now).vote_granted)
        self.assertEqual(ahead.next_deadline(), now)
        ahead.tick(now)
        self.assertEqual(ahead.role, PRE_CANDIDATE)
        pump(nodes, now)
        self.assertEqual(ahead.role, LEADER)

    def test_timers_firing_together_do_not_split_the_vote(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        del nodes[1]  # the leader dies; both followers' timers fire at the same moment
        now += 0.3
        for node in nodes.values():
            node.core.tick(now)
        requests = {i: node.flush() for i, node in nodes.items()}
        self.assertEqual([n.core.role for n in nodes.values()], [PRE_CANDIDATE] * 2)
        asks = [(src, m) for src, messages in requests.items() for m in messages if m[0] in nodes]
        # Both requests arrive before either answer: each sees the other's pre-vote.
        answers = [nodes[dst].core.receive_request(request, now) for _, (dst, request) in asks]
        for (src, (dst, request)), answer in zip(asks, answers, strict=True):
            nodes[src].core.receive_response(dst, request, answer, now)
        pump(nodes, now)
        self.assertEqual((nodes[2].core.role, nodes[2].core.term), (LEADER, 2))
        self.assertEqual((nodes[3].core.role, nodes[3].core.leader_id), (FOLLOWER, 2))

    def test_a_node_that_granted_a_pre_vote_does_not_stand_at_once(self):
        """Node 3 grants node 2's pre-vote as a follower; its own lease ends a moment
        later, before node 2 has read that grant. Had node 3 stood then, node 2, still a
        pre-candidate, would have granted it in turn: both would stand in one term."""
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        del nodes[1]
        now += 0.3
        first, second = nodes[2], nodes[3]
        first.core.tick(now)
        (asks_first,) = [m for m in first.flush() if m[0] == 3]
        granted_first = second.core.receive_request(asks_first[1], now)
        self.assertTrue(granted_first.vote_granted)
        self.assertEqual(second.core.next_deadline(), now + TIMINGS.election_timeout_min)
        second.core.tick(now + 0.001)
        self.assertEqual(second.core.role, FOLLOWER)
        first.core.receive_response(3, asks_first[1], granted_first, now + 0.002)
        pump(nodes, now + 0.002)
        self.assertEqual((first.core.role, first.core.term), (LEADER, 2))
        self.assertEqual((second.core.role, second.core.leader_id), (FOLLOWER, 2))

    def test_a_pre_candidate_refused_by_a_peer_in_its_lease_grants_that_peer_later(self):
        """Node 3 heard the leader last, so its lease ends later: it refuses node 2's
        pre-vote, stands when its lease ends, and node 2 (a pre-candidate whose round
        is lost) grants it."""
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        heartbeat = AppendEntriesRequest(1, 1, nodes[3].core.log.last_index, 1, [], 0)
        nodes[3].core.receive_request(heartbeat, now + 0.02)  # node 2 missed it
        del nodes[1]
        first, second = nodes[2], nodes[3]
        for node in (first, second):  # both see the leader's connection end
            node.core.leader_disconnected(1, 1, now + 0.03)
        now = first.core.next_deadline()  # node 2's lease has ended, node 3's has not
        self.assertLess(now, second.core.next_deadline())
        first.core.tick(now)
        self.assertEqual(first.core.role, PRE_CANDIDATE)
        pump(nodes, now)
        self.assertEqual((first.core.role, second.core.role), (PRE_CANDIDATE, FOLLOWER))
        now = second.core.next_deadline()  # node 3 stands when its lease ends
        second.core.tick(now)
        pump(nodes, now)
        self.assertEqual((second.core.role, second.core.term), (LEADER, 2))
        self.assertEqual((first.core.role, first.core.leader_id), (FOLLOWER, 3))

    def test_a_leader_does_not_count_its_own_pause_against_followers(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        now = run(nodes, now, 1.0)
        leader = nodes[1].core
        now += 1.0  # the leader's process did not run for a second (so nobody heard it)
        leader.tick(now)
        self.assertEqual(leader.role, LEADER)
        pump(nodes, now)
        now = run(nodes, now, 1.0)
        self.assertEqual((leader.role, leader.term), (LEADER, 1))
        # Followers that stay silent while it runs still make it step down.
        now = run(nodes, now, 0.4, blocked=lambda s, d: 1 in (s, d))
        self.assertEqual(leader.role, FOLLOWER)

    @staticmethod
    def late_tick(core: RaftCore, late: float) -> float:
        """Fire `core`'s timer `late` seconds after it was due, as the service does
        after the node was held; the time it fired."""
        now = core.next_deadline() + late
        core.timer_late(late, now)
        core.tick(now)
        return now

    def test_a_follower_whose_timer_came_late_hears_its_leader_out_first(self):
        # Every node was held (a large apply, say): the follower's timer and the
        # leader's heartbeat both fire late. The follower waits two heartbeats for the
        # leader before standing; the leader's heartbeat comes and it follows on.
        nodes = cluster(3)
        self.elect(nodes, 1)
        follower = nodes[2].core
        now = self.late_tick(follower, 0.3)
        self.assertEqual(follower.role, FOLLOWER)
        self.assertEqual(follower.next_deadline(), now + 2 * TIMINGS.heartbeat_interval)
        nodes[1].core.tick(now)  # the leader's own late heartbeat
        pump(nodes, now)
        self.assertEqual((follower.role, follower.leader_id, follower.term), (FOLLOWER, 1, 1))
        self.assertGreaterEqual(follower.next_deadline(), now + TIMINGS.election_timeout_min)

    def test_a_follower_late_again_without_hearing_its_leader_stands(self):
        nodes = cluster(3)
        self.elect(nodes, 1)
        del nodes[1]  # the leader went while node 2 was held
        follower = nodes[2].core
        self.late_tick(follower, 0.3)
        self.assertEqual(follower.role, FOLLOWER)
        self.late_tick(follower, 0.3)  # held again: no second grace without a word
        self.assertEqual(follower.role, PRE_CANDIDATE)

    def test_a_timer_late_by_less_than_a_heartbeat_changes_nothing(self):
        nodes = cluster(3)
        self.elect(nodes, 1)
        del nodes[1]
        follower = nodes[2].core
        self.late_tick(follower, TIMINGS.heartbeat_interval / 2)
        self.assertEqual(follower.role, PRE_CANDIDATE)

    def test_pre_candidate_ahead_stands_again_when_a_stale_peer_asks(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        nodes[1].core.propose(command(1), now)
        deliver(nodes, 1, [m for m in nodes[1].flush() if m[0] == 2], now)  # 3 misses it
        ahead, behind = nodes[2].core, nodes[3].core
        early_at = ahead.next_deadline()
        heartbeat = AppendEntriesRequest(1, 1, 1, 1, [], 1)
        behind.receive_request(heartbeat, early_at - 0.05)  # the leader's last words
        del nodes[1]
        ahead.tick(early_at)
        (_, early), _ = nodes[2].flush()
        refusal = behind.receive_request(early, early_at)
        self.assertFalse(refusal.vote_granted)
        ahead.receive_response(3, early, refusal, early_at)
        self.assertEqual(ahead.role, PRE_CANDIDATE)
        asked_at = behind.next_deadline()  # its lease over, node 3 asks for votes
        self.assertLess(asked_at, ahead.next_deadline())
        behind.tick(asked_at)
        (_, request), _ = nodes[3].flush()
        self.assertFalse(ahead.receive_request(request, asked_at).vote_granted)
        self.assertEqual(ahead.next_deadline(), asked_at)
        ahead.tick(asked_at)
        pump(nodes, asked_at)
        self.assertEqual(ahead.role, LEADER)

    def test_follower_asked_in_lease_stands_when_the_lease_ends_unless_the_leader_speaks(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        follower = nodes[2].core
        stale = VoteRequest(5, 3, 0, 0, True)
        self.assertFalse(follower.receive_request(stale, now + 0.01).vote_granted)
        self.assertEqual(follower.next_deadline(), now + 0.15)  # not its own, later timer
        now = run(nodes, now, 1.0)  # the leader's heartbeats push it back each time
        self.assertEqual([(n.core.term, n.core.leader_id) for n in nodes.values()], [(1, 1)] * 3)
        self.assertEqual(nodes[1].core.role, LEADER)

    def test_followers_whose_leader_disconnected_elect_when_their_lease_ends(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        now = run(nodes, now, 0.1)  # the last heartbeat reached both followers at `now`
        del nodes[1]  # the leader's process ends: its connections close at once
        for node in nodes.values():
            node.core.leader_disconnected(1, 1, now + 0.01)
        lease_end = now + TIMINGS.election_timeout_min
        self.assertEqual([n.core.next_deadline() for n in nodes.values()], [lease_end] * 2)
        for node in nodes.values():
            node.core.tick(lease_end)
        pump(nodes, lease_end)
        leaders = [n.core for n in nodes.values() if n.core.role == LEADER]
        self.assertEqual([core.term for core in leaders], [2])

    def test_one_follower_losing_its_connection_does_not_unseat_a_live_leader(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        now = run(nodes, now, 0.1)
        follower = nodes[3].core
        follower.leader_disconnected(1, 1, now)
        now = run(nodes, now, 1.0)  # the leader's next words push its election back
        self.assertEqual([(n.core.term, n.core.leader_id) for n in nodes.values()], [(1, 1)] * 3)
        self.assertEqual(nodes[1].core.role, LEADER)
        self.assertTrue(follower.has_quorum(now))

    def test_a_disconnection_of_another_leader_or_term_changes_nothing(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        follower = nodes[2].core
        deadline = follower.next_deadline()
        follower.leader_disconnected(3, 1, now)
        follower.leader_disconnected(1, 0, now)
        self.assertEqual(follower.next_deadline(), deadline)
        self.assertTrue(follower.has_quorum(now))

    def test_partitioned_node_rejoins_without_disrupting_leader(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        now = run(nodes, now, 2.0, blocked=lambda s, d: 3 in (s, d))  # futile pre-votes
        self.assertEqual(nodes[3].core.term, 1)
        self.assertEqual(nodes[1].core.role, LEADER)
        now = run(nodes, now, 0.5)
        self.assertEqual([n.core.term for n in nodes.values()], [1, 1, 1])
        self.assertEqual(nodes[1].core.role, LEADER)
        self.assertEqual(nodes[3].core.leader_id, 1)

    def test_check_quorum_leader_steps_down(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        leader = nodes[1].core
        self.assertTrue(leader.has_quorum(now))
        ticks = 0
        while leader.role == LEADER and ticks < 40:
            ticks += 1
            now += 0.01
            leader.tick(now)
            pump(nodes, now, blocked=lambda s, d: 1 in (s, d))
        self.assertEqual((leader.role, leader.term), (FOLLOWER, 1))
        stepped_down_after = ticks * 0.01
        self.assertGreaterEqual(stepped_down_after, 0.3)
        self.assertLessEqual(stepped_down_after, 0.36)
        self.assertFalse(leader.has_quorum(now))

    def test_timeout_now_honoured_only_from_current_leader(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        follower = nodes[2].core
        self.assertFalse(follower.receive_request(TimeoutNowRequest(1, 3), now).success)
        self.assertFalse(follower.receive_request(TimeoutNowRequest(0, 1), now).success)
        self.assertEqual((follower.role, follower.term), (FOLLOWER, 1))
        response = follower.receive_request(TimeoutNowRequest(1, 1), now)
        self.assertTrue(response.success)
        self.assertEqual((follower.role, follower.term), (CANDIDATE, 2))
        pump(nodes, now)  # the real vote request is granted despite the live leader
        self.assertEqual(follower.role, LEADER)
        self.assertEqual(nodes[1].core.role, FOLLOWER)


class FollowerLogTests(RaftCoreTestCase):
    """How a follower takes, truncates and commits what a leader sends."""

    def test_follower_truncates_only_on_real_conflict(self):
        node = Node(2, [1, 3])
        core = node.core
        core.receive_request(AppendEntriesRequest(1, 1, 0, 0, entries(1, 1, 1, 1), 1), 1.0)
        node.flush()
        # A stale, shorter AppendEntries that matches does not cut the log.
        response = core.receive_request(AppendEntriesRequest(1, 1, 0, 0, entries(1, 1), 1), 1.0)
        self.assertTrue(response.success)
        self.assertEqual((response.match_index, core.log.last_index), (2, 4))
        # A new leader's entry 3 conflicts: 3 and 4 go, the new entries stay.
        response = core.receive_request(
            AppendEntriesRequest(2, 3, 2, 1, entries(2, start=3), 1), 2.0
        )
        self.assertTrue(response.success)
        self.assertEqual(response.match_index, 3)
        self.assertEqual([core.log.term_at(i) for i in (1, 2, 3)], [1, 1, 2])
        self.assertEqual(core.log.last_index, 3)
        node.flush()
        self.assertEqual(
            [(e.index, e.term) for e in node.storage.load().entries], [(1, 1), (2, 1), (3, 2)]
        )

    def test_follower_commit_never_passes_known_match(self):
        node = Node(2, [1, 3])
        core = node.core
        core.receive_request(AppendEntriesRequest(1, 1, 0, 0, entries(1, 1, 1), 0), 1.0)
        # Entry 4 onwards could differ from the leader's: commit stops at 3.
        core.receive_request(AppendEntriesRequest(1, 1, 3, 1, [], 10), 1.0)
        self.assertEqual(core.commit_index, 3)
        # A heartbeat that only vouches for index 1 does not move it either way.
        core.receive_request(AppendEntriesRequest(1, 1, 1, 1, [], 10), 1.0)
        self.assertEqual(core.commit_index, 3)

    def test_follower_never_lowers_its_term(self):
        node = Node(2, [1, 3])
        node.core.receive_request(VoteRequest(5, 3, 0, 0), 1.0)
        response = node.core.receive_request(AppendEntriesRequest(4, 1, 0, 0, entries(4), 0), 1.0)
        self.assertFalse(response.success)
        self.assertEqual(response.term, 5)
        self.assertEqual((node.core.term, node.core.log.last_index), (5, 0))

    def test_one_step_backoff_from_hint(self):
        stored = StoredState(term=3, entries=entries(*([1] * 30), 3))
        leader = Node(1, [2], storage=storage_with(stored))
        follower = Node(2, [1], storage=storage_with(StoredState(term=3, entries=entries(1, 1, 1))))
        leader.core.tick(1.0)
        nodes = {1: leader, 2: follower}
        sent = []
        original = follower.core.receive_request

        def spy(request, now):
            if isinstance(request, AppendEntriesRequest) and request.entries:
                sent.append((request.prev_log_index, len(request.entries)))
            return original(request, now)

        follower.core.receive_request = spy
        pump(nodes, 1.0)
        self.assertEqual(leader.core.role, LEADER)
        # First try from the leader's end is refused with hint 3; the next starts at 4.
        self.assertEqual(sent[:2], [(31, 1), (3, 29)])
        self.assertEqual(follower.core.log.last_index, 32)
        self.assertEqual(leader.core.commit_index, 32)

    def test_conflicting_term_is_skipped_in_one_step(self):
        follower = Node(2, [1])
        follower.core.receive_request(
            AppendEntriesRequest(2, 3, 0, 0, entries(1, 2, 2, 2, 2), 1), 1
        )
        follower.flush()
        response = follower.core.receive_request(AppendEntriesRequest(3, 1, 5, 3, [], 1), 2)
        self.assertFalse(response.success)
        self.assertEqual(response.match_index, 1)


class ReplicationTests(RaftCoreTestCase):
    """How a leader batches, paces and resends AppendEntries."""

    def test_batching_while_a_send_is_in_flight_and_heartbeats_not_held_up(self):
        limits = RaftLimits(max_append_bytes=1000)
        nodes = cluster(2, limits=limits)
        now = self.elect(nodes, 1)
        leader = nodes[1]
        leader.core.propose(command(1), now)
        first = leader.flush()
        self.assertEqual(len(first), 1)
        self.assertEqual(len(first[0][1].entries), 1)  # sent at once
        for i in range(2, 6):
            leader.core.propose(command(i, size=300), now)
        self.assertEqual(leader.flush(), [])  # in flight: the new entries wait for the answer
        leader.core.tick(now + TIMINGS.heartbeat_interval)
        (beat,) = leader.flush()
        self.assertEqual(beat[1].entries, [])  # the heartbeat goes anyway
        follower = nodes[2]
        response = follower.core.receive_request(first[0][1], now)
        follower.flush()
        leader.core.receive_response(2, first[0][1], response, now)
        (batch,) = leader.flush()
        self.assertEqual([e.index for e in batch[1].entries], [3, 4, 5])  # byte budget cut the 4th
        response = follower.core.receive_request(batch[1], now)
        follower.flush()
        leader.core.receive_response(2, batch[1], response, now)
        (rest,) = leader.flush()
        self.assertEqual([e.index for e in rest[1].entries], [6])

    def test_followers_learn_a_new_commit_soon_not_at_the_next_heartbeat(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        leader = nodes[1]
        leader.core.propose(command(1), now)
        sent = leader.flush()
        self.assertEqual(sorted(dst for dst, _ in sent), [2, 3])
        index = sent[0][1].entries[-1].index
        # node 2 answers first: the entry commits; node 3's request is still in flight
        _dst, request = next(m for m in sent if m[0] == 2)
        response = nodes[2].core.receive_request(request, now)
        nodes[2].flush()
        leader.core.receive_response(2, request, response, now)
        self.assertEqual(leader.core.commit_index, index)
        self.assertEqual(leader.flush(), [])  # a moment for new entries to carry it
        notice_at = now + TIMINGS.commit_notice_delay
        self.assertEqual(leader.core.next_deadline(), notice_at)
        leader.core.tick(notice_at)
        (notice,) = leader.flush()
        self.assertEqual((notice[0], notice[1].entries), (2, []))
        self.assertEqual(notice[1].leader_commit, index)
        nodes[2].core.receive_request(notice[1], notice_at)
        self.assertEqual(nodes[2].core.commit_index, index)
        # node 3's answer brings its own notice; nothing is sent twice
        _dst, request = next(m for m in sent if m[0] == 3)
        response = nodes[3].core.receive_request(request, notice_at)
        nodes[3].flush()
        leader.core.receive_response(3, request, response, notice_at)
        leader.core.tick(notice_at + TIMINGS.commit_notice_delay)
        (notice,) = leader.flush()
        self.assertEqual((notice[0], notice[1].leader_commit), (3, index))
        leader.core.receive_response(2, notice[1], AppendEntriesResponse(1, True, index), now)
        leader.core.tick(notice_at + 2 * TIMINGS.commit_notice_delay)
        self.assertEqual(leader.flush(), [])
        self.assertGreater(leader.core.next_deadline(), notice_at + TIMINGS.commit_notice_delay)

    def test_new_entries_carry_the_commit_index_instead_of_a_notice(self):
        nodes = cluster(2)
        now = self.elect(nodes, 1)
        leader = nodes[1]
        leader.core.propose(command(1), now)
        ((_dst, request),) = leader.flush()
        leader.core.propose(command(2), now)  # waits: one request in flight
        response = nodes[2].core.receive_request(request, now)
        leader.core.receive_response(2, request, response, now)
        ((_dst, carrying),) = leader.flush()
        self.assertEqual(
            ([e.index for e in carrying.entries], carrying.leader_commit),
            ([request.entries[-1].index + 1], request.entries[-1].index),
        )
        response = nodes[2].core.receive_request(carrying, now)
        leader.core.receive_response(2, carrying, response, now)
        leader.core.tick(now + TIMINGS.commit_notice_delay)
        ((_dst, notice),) = leader.flush()
        self.assertEqual((notice.entries, notice.leader_commit), ([], carrying.entries[-1].index))

    def test_lost_append_is_resent_on_next_heartbeat(self):
        nodes = cluster(2)
        now = self.elect(nodes, 1)
        leader = nodes[1]
        leader.core.propose(command(1), now)
        ((peer, request),) = leader.flush()
        leader.core.send_failed(peer, request, now)
        self.assertEqual(leader.flush(), [])
        leader.core.tick(now + TIMINGS.heartbeat_interval)
        messages = [m for _, m in leader.flush()]
        self.assertTrue(
            any(m.entries and m.entries[0].index == 2 for m in messages),
            f"no resend of entry 2 among {messages}",
        )


class SnapshotTests(RaftCoreTestCase):
    """Compaction, and InstallSnapshot on followers and in a cluster."""

    def test_compaction_after_more_than_threshold_applied(self):
        limits = RaftLimits(compaction_threshold=10)
        nodes = cluster(1, limits=limits)
        node = nodes[1]
        node.core.tick(1.0)
        node.flush()
        for i in range(9):
            node.core.propose(command(i), 1.0)
            node.flush()
        self.assertEqual(node.core.log.snapshot_index, 0)  # 10 applied entries: not more than 10
        node.core.propose(command(9), 1.0)
        node.flush()
        self.assertEqual((node.core.log.snapshot_index, node.core.log.first_index), (11, 12))
        stored = node.storage.load()
        self.assertEqual(stored.snapshot.index, 11)
        self.assertEqual(decode(stored.snapshot.data), list(range(10)))
        self.assertEqual(stored.entries, [])

    def test_install_snapshot_chunked_idempotent_and_stale_ignored(self):
        node = Node(2, [1, 3])
        core = node.core
        core.receive_request(AppendEntriesRequest(1, 1, 0, 0, entries(1, 1, 1), 2), 1.0)
        node.flush()
        data = encode(range(100))
        chunks = snapshot_chunks(data, index=50, term=2, size=64)
        self.assertGreater(len(chunks), 3)
        core.receive_request(chunks[0], 2.0)
        core.receive_request(chunks[1], 2.0)
        core.receive_request(chunks[1], 2.0)  # duplicate
        core.receive_request(chunks[0], 2.0)  # late duplicate of the first
        for chunk in chunks[2:-1]:
            core.receive_request(chunk, 2.0)
        self.assertIsNotNone(node.flush())
        self.assertEqual(core.commit_index, 2)
        core.receive_request(chunks[-1], 2.0)
        node.flush()
        self.assertEqual(core.commit_index, 50)
        self.assertEqual((core.log.first_index, core.log.last_index), (51, 50))
        self.assertEqual(node.applied, list(range(100)))
        stored = node.storage.load()
        self.assertEqual(stored.snapshot.index, 50)
        self.assertEqual(stored.entries, [])  # the old log disagreed: gone
        # The same snapshot again, or an older one, changes nothing.
        for chunk in chunks + snapshot_chunks(encode(range(10)), index=20, term=2, size=64):
            core.receive_request(chunk, 3.0)
        ready = core.take_ready()
        if ready is not None:
            self.assertIsNone(ready.restore)
            self.assertIsNone(ready.snapshot)
        self.assertEqual(core.commit_index, 50)
        self.assertEqual(node.applied, list(range(100)))

    def test_install_snapshot_keeps_agreeing_suffix(self):
        node = Node(2, [1, 3])
        core = node.core
        core.receive_request(AppendEntriesRequest(1, 1, 0, 0, entries(1, 1, 1, 1), 1), 1.0)
        node.flush()
        (chunk,) = snapshot_chunks(encode([7, 8]), index=2, term=1, size=1000, leader_term=1)
        core.receive_request(chunk, 2.0)
        node.flush()
        self.assertEqual((core.log.first_index, core.log.last_index), (3, 4))
        self.assertEqual([e.index for e in node.storage.load().entries], [3, 4])

    def test_a_ready_that_restores_a_snapshot_applies_nothing_after_it(self):
        """The state machine restores a snapshot before it applies what follows it, and
        may take turns to: entries committed after it come in a later Ready."""
        node = Node(2, [1, 3])
        core = node.core
        (chunk,) = snapshot_chunks(encode([7, 8]), index=2, term=1, size=1000, leader_term=1)
        core.receive_request(chunk, 1.0)
        core.receive_request(AppendEntriesRequest(1, 1, 2, 1, entries(1, 1, start=3), 4), 1.0)
        first = core.take_ready()
        self.assertEqual((first.restore.index, first.committed), (2, []))
        self.assertTrue(core.commits_waiting)
        node.write(first)
        second = core.take_ready()
        self.assertIsNone(second.restore)
        self.assertEqual([entry.index for entry in second.committed], [3, 4])

    def test_snapshot_catch_up_in_cluster(self):
        limits = RaftLimits(compaction_threshold=20, snapshot_chunk_bytes=16)
        nodes = cluster(3, limits=limits)
        now = self.elect(nodes, 1)
        for i in range(40):
            nodes[1].core.propose(command(i), now)
            pump(nodes, now, blocked=lambda s, d: 3 in (s, d))
        self.assertGreater(nodes[1].core.log.snapshot_index, 20)
        for _step in range(30):
            now += 0.01
            for node in nodes.values():
                node.core.tick(now)
            pump(nodes, now)
        self.assertEqual(nodes[3].applied, list(range(40)))
        self.assertEqual(nodes[1].applied, list(range(40)))

    def test_what_a_live_follower_lacks_is_kept_by_this_leader_and_the_next(self):
        """The leader names the lowest index a follower it heard from lately lacks; its
        followers hear it, and one elected next keeps it until that follower answers."""
        nodes = cluster(5)
        now = self.elect(nodes, 1)
        self.assertEqual(nodes[1].core.retain_from(), nodes[1].core.log.last_index + 1)

        def cut(src, dst):
            return 5 in (src, dst)

        for i in range(5):
            nodes[1].core.propose(command(i), now)
        pump(nodes, now, blocked=cut)
        lacks = nodes[5].core.log.last_index + 1
        self.assertLess(lacks, nodes[1].core.log.last_index)
        self.assertEqual([nodes[i].core.retain_from() for i in (1, 2, 3)], [lacks] * 3)

        del nodes[1]
        now += 1.0
        nodes[2].core.tick(now)
        pump(nodes, now, blocked=cut)
        self.assertEqual(nodes[2].core.role, LEADER)
        self.assertEqual(nodes[2].core.retain_from(), lacks)  # node 5 has not answered
        self.assertEqual(nodes[3].core.retain_from(), lacks)

        now = run(nodes, now, 0.1)
        self.assertEqual(nodes[5].applied, list(range(5)))
        self.assertEqual(nodes[2].core.retain_from(), nodes[2].core.log.last_index + 1)


class LeadershipTransferTests(RaftCoreTestCase):
    """Leadership transfer: catch the target up, then TimeoutNow."""

    def test_transfer_catches_target_up_then_sends_timeout_now(self):
        nodes = cluster(3)
        now = self.elect(nodes, 1)
        leader = nodes[1].core
        leader.propose(command(1), now)
        pump(nodes, now, blocked=lambda s, d: d == 3)
        leader.transfer_leadership(3, now)
        self.assertFalse(leader.accepting_proposals)
        self.assertEqual(leader.transfer_target, 3)
        with self.assertRaises(RuntimeError):
            leader.propose(command(2), now)
        leader.tick(now + TIMINGS.heartbeat_interval)
        messages = nodes[1].flush()
        self.assertFalse(any(isinstance(m, TimeoutNowRequest) for _, m in messages))
        deliver(nodes, 1, [(d, m) for d, m in messages if d == 3], now)
        messages = nodes[1].flush()
        self.assertEqual([(d, type(m)) for d, m in messages], [(3, TimeoutNowRequest)])
        deliver(nodes, 1, messages, now)
        results = [r.transfer_result for r in iter(leader.take_ready, None)]
        self.assertEqual(results, [None])  # the target campaigns; it has not won yet
        pump(nodes, now)
        self.assertEqual(nodes[3].core.role, LEADER)
        self.assertEqual(leader.role, FOLLOWER)
        self.assertEqual(leader.leader_id, 3)
        self.assertFalse(leader.accepting_proposals)
