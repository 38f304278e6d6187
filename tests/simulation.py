"""N RaftCores on a simulated network and simulated disks, with Raft's invariants checked.

Everything random (message delays, drops, duplicates, partitions, crashes, disk latency,
proposals, the cores' own election timeouts) comes from one `random.Random(seed)`, so a
seed replays exactly, and a run of S steps is a prefix of every longer run of that seed.

The nodes are driven the way RaftService drives a core: the writes of each Ready go to a
disk that completes them in order after a delay and only then reports `persisted`; an
answer to a request, and a VoteRequest or TimeoutNow of our own, wait until every write
issued so far is durable; AppendEntries and InstallSnapshot go out at once. Each RPC ends
once: with the first answer to arrive before its deadline, or with `send_failed`.

A crash keeps only what the disk completed (any prefix of the writes in flight, since a
disk may finish a write just before the crash is noticed) and restarts the node later
from that store. A step is one event that reaches a node: a request or answer delivered,
an RPC deadline, a disk write completed, a timer, a proposal or a fault. After each step
the invariants of DESIGN.md §4 are checked against the node it touched (only that node
changed):

1. at most one leader per term;
2. log matching: every (index, term) ever appended carries one command and follows one
   term, so by induction logs sharing an entry are identical up to it;
3. leader completeness: a new leader holds the highest committed entry (with 2 and 4,
   every committed entry);
4. state machine safety: no two nodes apply different entries at one index;
5. applied state (the state machine's snapshot bytes) is equal across nodes at equal
   applied index, including states restored from snapshots.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from twisted.internet import defer

from jobsched.raft.core import LEADER, RaftCore, RaftLimits, RaftTimings
from jobsched.raft.messages import AppendEntriesRequest, InstallSnapshotRequest, LogEntry
from jobsched.raft.storage import MemoryStorage, Snapshot, StoredState

CoreFactory = Callable[..., RaftCore]
_NOBODY = object()

SIZES = (3, 5, 3, 5, 3, 5, 1, 2, 4, 7)
TIMINGS = RaftTimings()
RPC_TIMEOUT = 2 * TIMINGS.heartbeat_interval
SNAPSHOT_RPC_TIMEOUT = 1.0

# Event kinds, in the heap as (time, seq, kind, a, b).
_TIMER, _REQUEST, _RESPONSE, _DEADLINE, _DISK, _PROPOSE, _FAULT, _RESTART = range(8)


def cluster_size(seed: int) -> int:
    """The cluster size a seed runs with: mostly 3 and 5, sometimes 1, 2, 4 or 7."""
    return SIZES[seed % len(SIZES)]


class InvariantViolation(AssertionError):
    """A Raft invariant broke at `step` of the run of `seed`."""

    def __init__(self, seed: int, step: int, message: str) -> None:
        super().__init__(f"seed {seed}, step {step}: {message}")
        self.seed = seed
        self.step = step
        self.message = message


@dataclass
class Stats:
    """What one run (or, summed, many runs) did."""

    runs: int = 0
    steps: int = 0
    sim_seconds: float = 0.0
    elections: int = 0
    max_term: int = 0
    proposals: int = 0
    accepted: int = 0
    committed: int = 0
    applied_entries: int = 0
    messages: int = 0
    dropped: int = 0
    duplicated: int = 0
    crashes: int = 0
    torn_writes: int = 0
    partitions: int = 0
    heals: int = 0
    transfers: int = 0
    transfers_won: int = 0
    compactions: int = 0
    snapshots_installed: int = 0

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))


class Ledger:
    """The replicated state machine: a hash chain over the applied commands."""

    __slots__ = ("state",)

    def __init__(self, state: bytes = bytes(16)) -> None:
        self.state = state

    def apply(self, value: int) -> None:
        self.state = hashlib.blake2b(self.state + value.to_bytes(8, "big"), digest_size=16).digest()


class Invariants:
    """Records what the cluster did and raises InvariantViolation when Raft breaks."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = 0
        self.leaders: dict[int, int] = {}  # term -> node
        self.entries: dict[tuple[int, int], tuple[int, int | None]] = {}
        self.applied: dict[int, tuple[int, int]] = {}  # index -> (term, value)
        self.states: dict[int, bytes] = {0: Ledger().state}
        self.committed_index = 0

    def forget(self, keys: Iterable[tuple[int, int]]) -> None:
        """The entries at these (index, term) vanished from every log and message."""
        for key in keys:
            del self.entries[key]

    def fail(self, message: str) -> None:
        raise InvariantViolation(self.seed, self.step, message)

    def leader(self, node_id: int, core: RaftCore) -> None:
        """(1) and, the first time `node_id` leads `core.term`, (3)."""
        term = core.term
        first = self.leaders.get(term)
        if first == node_id:
            return
        if first is not None:
            self.fail(f"two leaders in term {term}: nodes {first} and {node_id}")
        self.leaders[term] = node_id
        index = self.committed_index
        if index > core.log.snapshot_index:
            term_there = core.log.term_at(index)
            if term_there != self.applied[index][0]:
                self.fail(
                    f"leader {node_id} of term {term} lacks committed entry {index} "
                    f"(term {self.applied[index][0]}; its log has {term_there})"
                )

    def appended(self, node_id: int, entries: list[LogEntry], core: RaftCore) -> None:
        """(2): one command and one predecessor term per (index, term)."""
        for entry in entries:
            key = (entry.index, entry.term)
            seen = (entry.command, core.log.term_at(entry.index - 1))
            first = self.entries.setdefault(key, seen)
            if first != seen:
                self.fail(
                    f"node {node_id} holds entry {key} as (command, previous term) "
                    f"{seen}, another log as {first}"
                )

    def applied_entry(self, node_id: int, entry: LogEntry, value: int, state: bytes) -> None:
        """(4) and (5) after `node_id` applied `entry`."""
        index = entry.index
        seen = (entry.term, value)
        first = self.applied.setdefault(index, seen)
        if first != seen:
            self.fail(
                f"node {node_id} applied (term, command) {seen} at index {index}, "
                f"another node {first}"
            )
        if index > self.committed_index:
            self.committed_index = index
        self.same_state(node_id, index, state)

    def same_state(self, node_id: int, index: int, state: bytes) -> None:
        """(5) for `node_id`'s state at applied index `index`."""
        first = self.states.setdefault(index, state)
        if first != state:
            self.fail(
                f"node {node_id}'s applied state at index {index} differs from another node's"
            )


class _Call:
    """One outbound RPC; it ends once, by an answer or by its deadline."""

    __slots__ = ("done", "dst", "incarnation", "request", "src")

    def __init__(self, src: int, incarnation: int, dst: int, request) -> None:
        self.src = src
        self.incarnation = incarnation
        self.dst = dst
        self.request = request
        self.done = False


class KeepingStorage(MemoryStorage):
    """A store that keeps the entries a compaction covers instead of its snapshot, as
    SqliteStorage does, while it holds them all and within `keep` entries of the
    snapshot it has."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def save_compaction(self, index: int, term: int, data: bytes):
        state = self._state
        stored = state.snapshot.index if state.snapshot else 0
        last = state.entries[-1].index if state.entries else stored
        if index <= last and index - stored <= self.keep:
            return defer.succeed(None)
        return self.save_snapshot(index, term, data)


class _Node:
    """A core with its durable store, disk queue and state machine."""

    def __init__(self, node_id: int, peers: list[int], keep: int) -> None:
        self.id = node_id
        self.peers = peers
        self.storage = KeepingStorage(keep)
        self.core: RaftCore | None = None
        self.ledger = Ledger()
        self.incarnation = 0
        self.issued_seq = 0
        self.durable_seq = 0
        self.disk_delay = 0.0  # the mean time a write takes
        self.disk_free_at = 0.0
        self.timer_due = 0.0
        self.writes: deque[tuple[int, list]] = deque()  # (seq, ops) not yet durable
        # What waits for writes up to seq: (seq, call, answer) or (seq, peer, request).
        self.held: deque[tuple[int, object, object]] = deque()


class Simulation:
    """One seeded run; see the module docstring."""

    def __init__(self, seed: int, size: int, core_factory: CoreFactory = RaftCore) -> None:
        rng = self.rng = random.Random(seed)
        self.seed = seed
        self.core_factory = core_factory
        self.check = Invariants(seed)
        self.stats = Stats(runs=1)
        self.now = 0.0
        self.heap: list = []
        self.seq = 0
        self.next_value = 1
        ids = list(range(1, size + 1))
        self.up: set[int] = set()
        self.cut: set[tuple[int, int]] = set()
        self.calm = False  # settle(): no more faults or client load
        # This seed's weather: network, load and fault rates (disks are per node).
        self.drop = rng.choice((0.0, 0.01, 0.05, 0.15))
        self.duplicate = rng.choice((0.0, 0.02, 0.1))
        self.net_delay = rng.choice((0.001, 0.005, 0.02))
        self.propose_every = rng.uniform(0.01, 0.06)
        self.fault_every = rng.uniform(0.2, 1.0)
        self.limits = RaftLimits(
            compaction_threshold=rng.choice((5, 20, 100)),
            max_append_bytes=rng.choice((8, 64, 1 << 20)),
            snapshot_chunk_bytes=rng.choice((4, 8, 1 << 10)),
            max_inflight_appends=rng.choice((1, 2, 4)),
        )
        # Stores keep up to four compactions' entries instead of their snapshots.
        keep = 4 * self.limits.compaction_threshold
        self.nodes = {i: _Node(i, [p for p in ids if p != i], keep) for i in ids}
        for i in ids:
            self.nodes[i].disk_delay = rng.choice((0.0002, 0.002, 0.01))
            self._start(self.nodes[i])
        self._push(rng.expovariate(1 / self.propose_every), _PROPOSE, None, None)
        self._push(rng.expovariate(1 / self.fault_every), _FAULT, None, None)

    # ------------------------------------------------------------------ the loop

    def run(self, steps: int) -> Stats:
        """Run `steps` steps; raises InvariantViolation when an invariant breaks."""
        end = self.check.step + steps
        while self.check.step < end:
            self._step()
        stats, leaders = self.stats, self.check.leaders
        stats.steps = self.check.step
        stats.sim_seconds = self.now
        stats.elections = len(leaders)
        stats.max_term = max(leaders, default=0)
        return stats

    def settle(self, seconds: float) -> None:
        """Heal the network, restart every node, run `seconds` without faults or load."""
        self.calm = True
        self.drop = self.duplicate = 0.0
        self.cut.clear()
        for node in self.nodes.values():
            if node.core is None:
                self._start(node)
        end = self.now + seconds
        while self.heap[0][0] < end:
            self._step()

    def propose(self) -> int | None:
        """Hand a command to a leader now; the index it got (None: no leader)."""
        node = self._propose()
        if node is _NOBODY:
            return None
        self._drain(node)
        return node.core.log.last_index

    def applied(self) -> set[tuple[int, bytes]]:
        """The distinct (applied index, state) of the running nodes."""
        return {
            (n.core.applied_index, n.ledger.state)
            for n in self.nodes.values()
            if n.core is not None
        }

    def _step(self) -> None:
        """Carry out the next event and check the node it reached."""
        self.now, _, kind, a, b = heapq.heappop(self.heap)
        check = self.check
        check.step += 1  # the step a violation is reported at
        node = self._handle(kind, a, b)
        if node is None:
            check.step -= 1
            return
        if node is not _NOBODY:
            core = node.core
            self._drain(node)
            if core.role == LEADER:
                check.leader(node.id, core)
            due = core.next_deadline()
            if due != node.timer_due:
                node.timer_due = due
                self._push(due, _TIMER, node, node.incarnation)

    def _push(self, when: float, kind: int, a, b) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, kind, a, b))

    def _handle(self, kind: int, a, b):
        """Carry out one event; returns the node it reached, _NOBODY for a step that
        reached none (a fault, a proposal without a leader) or None for no step."""
        now = self.now
        if kind == _TIMER:
            if a.incarnation != b or a.timer_due != now:
                return None
            a.core.tick(now)
            if a.core.next_deadline() <= now:
                self.check.fail(f"node {a.id}'s timer did not move on at {now}")
            return a
        if kind == _REQUEST:
            node = self.nodes[a.dst]
            if node.core is None or (a.src, a.dst) in self.cut:
                return None
            response = node.core.receive_request(a.request, now)
            self._drain(node)
            if node.issued_seq > node.durable_seq:
                node.held.append((node.issued_seq, a, response))
            else:
                self._answer(a, response)
            return node
        if kind in (_RESPONSE, _DEADLINE):
            node = self.nodes[a.src]
            if a.done or node.incarnation != a.incarnation:
                return None
            if kind == _DEADLINE:
                node.core.send_failed(a.dst, a.request, now)
            elif (a.dst, a.src) in self.cut:
                return None
            else:
                node.core.receive_response(a.dst, a.request, b, now)
            a.done = True
            return node
        if kind == _DISK:
            if a.incarnation != b:
                return None
            self._disk_done(a)
            return a
        if kind == _PROPOSE:
            if self.calm:
                return None
            self._push(now + self.rng.expovariate(1 / self.propose_every), _PROPOSE, None, None)
            return self._propose()
        if kind == _FAULT:
            if self.calm:
                return None
            self._push(now + self.rng.expovariate(1 / self.fault_every), _FAULT, None, None)
            return self._fault()
        # _RESTART
        if a.core is not None:  # settle() restarted it already
            return None
        self._start(a)
        return a

    # ------------------------------------------------------------------ a node's outputs

    def _drain(self, node: _Node) -> None:
        """Carry out every Ready the node's core has, as RaftService does."""
        core, check = node.core, self.check
        while True:
            ready = core.take_ready()
            if ready is None:
                return
            if ready.has_writes:
                self._write(node, ready)
                if ready.entries:
                    check.appended(node.id, ready.entries, core)
            for peer, request in ready.messages:
                if isinstance(request, (AppendEntriesRequest, InstallSnapshotRequest)):
                    self._send(node, peer, request)
                elif node.issued_seq > node.durable_seq:
                    node.held.append((node.issued_seq, peer, request))
                else:
                    self._send(node, peer, request)
            if ready.restore is not None:
                self._restore(node, ready.restore)
                self.stats.snapshots_installed += 1
            if ready.committed:
                self._apply(node, ready.committed)
            if ready.transfer_result is not None and ready.transfer_result[0]:
                self.stats.transfers_won += 1

    def _write(self, node: _Node, ready) -> None:
        ops: list = []
        if ready.hard_state is not None:
            ops.append((node.storage.save_hard_state, ready.hard_state))
        if ready.snapshot is not None:
            s = ready.snapshot
            storage = node.storage
            save = storage.save_compaction if ready.own_compaction else storage.save_snapshot
            ops.append((save, (s.index, s.term, s.data)))
        if ready.truncate_from is not None:
            ops.append((node.storage.truncate, (ready.truncate_from,)))
        if ready.entries:
            ops.append((node.storage.append, (ready.entries,)))
        node.issued_seq = ready.seq
        node.writes.append((ready.seq, ops))
        rng = self.rng
        delay = node.disk_delay * (rng.expovariate(1.0) + (20 if rng.random() < 0.02 else 0))
        node.disk_free_at = max(node.disk_free_at, self.now) + delay
        self._push(node.disk_free_at, _DISK, node, node.incarnation)

    def _disk_done(self, node: _Node) -> None:
        seq, ops = node.writes.popleft()
        for write, args in ops:
            write(*args)
        node.durable_seq = seq
        node.core.persisted(seq)
        held = node.held
        while held and held[0][0] <= seq:
            _, target, message = held.popleft()
            if isinstance(target, _Call):
                self._answer(target, message)
            else:
                self._send(node, target, message)

    def _send(self, node: _Node, peer: int, request) -> None:
        rng, stats = self.rng, self.stats
        call = _Call(node.id, node.incarnation, peer, request)
        timeout = (
            SNAPSHOT_RPC_TIMEOUT if isinstance(request, InstallSnapshotRequest) else RPC_TIMEOUT
        )
        self._push(self.now + timeout, _DEADLINE, call, None)
        stats.messages += 1
        if rng.random() < self.drop:
            stats.dropped += 1
            return
        self._push(self.now + self._delay(), _REQUEST, call, None)
        if rng.random() < self.duplicate:
            stats.duplicated += 1
            self._push(self.now + self._delay(), _REQUEST, call, None)

    def _answer(self, call: _Call, response) -> None:
        if self.rng.random() < self.drop:
            self.stats.dropped += 1
            return
        self._push(self.now + self._delay(), _RESPONSE, call, response)

    def _delay(self) -> float:
        """Mostly a few ms; now and then long enough to outlive the RPC deadline."""
        rng = self.rng
        if rng.random() < 0.01:
            return rng.uniform(0.05, 0.5)
        return self.net_delay * rng.expovariate(1.0)

    def _apply(self, node: _Node, entries: list[LogEntry]) -> None:
        ledger, check, core = node.ledger, self.check, node.core
        for entry in entries:
            value = int(entry.command or b"0")
            if value:
                ledger.apply(value)
                if entry.index not in check.applied:
                    self.stats.committed += 1
            check.applied_entry(node.id, entry, value, ledger.state)
        self.stats.applied_entries += len(entries)
        core.applied_to(entries[-1].index)
        if core.compaction_due():
            core.compact(core.applied_index, ledger.state)
            self.stats.compactions += 1

    def _restore(self, node: _Node, snapshot: Snapshot) -> None:
        node.ledger = Ledger(snapshot.data)
        if snapshot.index not in self.check.states:
            self.check.fail(
                f"node {node.id} restored a snapshot at index {snapshot.index} that no node applied"
            )
        self.check.same_state(node.id, snapshot.index, snapshot.data)

    # ------------------------------------------------------------------ load and faults

    def _start(self, node: _Node) -> None:
        stored: StoredState = node.storage.load()
        node.core = self.core_factory(
            node.id, node.peers, stored, self.now, self.rng, TIMINGS, self.limits
        )
        node.ledger = Ledger()
        if stored.snapshot is not None:
            self._restore(node, stored.snapshot)
        self.up.add(node.id)
        node.timer_due = node.core.next_deadline()
        self._push(node.timer_due, _TIMER, node, node.incarnation)

    def _crash(self, node: _Node) -> None:
        """Lose everything but the store; writes in flight survive up to a random point."""
        ops = [op for _, batch in node.writes for op in batch]
        done = self.rng.randint(0, len(ops))
        for write, args in ops[:done]:
            write(*args)
        self.stats.torn_writes += 0 < done < len(ops)
        if not node.peers:
            # A lone node leads without asking anyone, so it may lead a term again after
            # losing its vote for itself: entries it lost exist nowhere and may recur.
            kept = {(e.index, e.term) for e in node.storage.load().entries}
            log = node.core.log
            self.check.forget(
                (e.index, e.term)
                for e in log.slice(log.first_index)
                if (e.index, e.term) not in kept
            )
        node.writes.clear()
        node.held.clear()
        node.core = None
        node.incarnation += 1
        node.issued_seq = node.durable_seq = 0
        self.up.discard(node.id)
        self.stats.crashes += 1
        self._push(self.now + self.rng.uniform(0.05, 2.0), _RESTART, node, None)

    def _propose(self) -> object:
        """A client hands one to three commands to a node that takes proposals."""
        self.stats.proposals += 1
        leaders = [i for i in sorted(self.up) if self.nodes[i].core.accepting_proposals]
        if not leaders:
            return _NOBODY
        node = self.nodes[self.rng.choice(leaders)]
        for _ in range(self.rng.randint(1, 3)):
            command = str(self.next_value).encode()  # opaque to Raft; the ledger reads it
            self.next_value += 1
            node.core.propose(command, self.now)
            self.stats.accepted += 1
        return node

    def _fault(self) -> object:
        rng, ids, stats = self.rng, sorted(self.nodes), self.stats
        roll = rng.random()
        up = sorted(self.up)
        if roll < 0.3 and up:
            # Prefer a leader, or a node with writes in flight (a crash mid-write).
            leaders = [i for i in up if self.nodes[i].core.role == LEADER]
            writing = [i for i in up if self.nodes[i].writes]
            victims = rng.choice((leaders, writing, up))
            self._crash(self.nodes[rng.choice(victims or up)])
            return _NOBODY
        if roll < 0.55 and len(ids) > 1:
            if rng.random() < 0.5:
                group = {rng.choice(ids)}
            else:
                group = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            one_way = rng.random() < 0.2
            for a in group:
                for b in ids:
                    if b not in group:
                        self.cut.add((a, b))
                        if not one_way:
                            self.cut.add((b, a))
            stats.partitions += 1
            return _NOBODY
        if roll < 0.85:
            if self.cut:
                stats.heals += 1
            self.cut.clear()
            return _NOBODY
        leaders = [i for i in up if self.nodes[i].core.accepting_proposals and self.nodes[i].peers]
        if not leaders:
            return _NOBODY
        node = self.nodes[rng.choice(leaders)]
        node.core.transfer_leadership(rng.choice(node.peers), self.now)
        stats.transfers += 1
        return node


def run(
    seed: int, steps: int, nodes: int | None = None, core_factory: CoreFactory = RaftCore
) -> Stats:
    """Simulate `nodes` (default: cluster_size(seed)) cores for `steps` steps."""
    size = cluster_size(seed) if nodes is None else nodes
    return Simulation(seed, size, core_factory).run(steps)
