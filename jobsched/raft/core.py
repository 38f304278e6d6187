"""RaftCore: the Raft protocol as a pure state machine.

No reactor, no I/O, no clock: every input is an event carrying `now` (seconds), every
random choice comes from an injected `random.Random`, and everything the node must do
in response is collected and handed out by `take_ready()` as a `Ready`:

* writes (hard state, snapshot, truncation, entries) the caller makes durable and then
  reports with `persisted(ready.seq)`;
* messages (peer id, request) to send; responses come back through
  `receive_response` or, when lost, `send_failed`;
* committed entries to apply in order (reported back with `applied_to`), a snapshot to
  restore into the state machine, role changes and the outcome of a leadership transfer.

Requests from peers go through `receive_request`, which returns the response at once.
The response promises durability (a vote, an AppendEntries success), so the caller must
hold it back until every write taken from `take_ready()` so far is durable.

Beyond the paper: pre-vote, check-quorum, a no-op entry per new leader, pipelined and
batched replication with one-step back-off, chunked snapshots and leadership transfer
(TimeoutNow); a node whose process was held (its timer fired late) does not count that
time as its peers' silence (`timer_late`, and the leader's own pause in `tick`). The
wire VoteRequest cannot say "this election was started by TimeoutNow", so the
check-quorum lease (refuse while a live leader is heard) applies to pre-votes: a real
vote request only exists after a pre-vote majority (the leader is gone for most nodes)
or after TimeoutNow from the leader itself.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from jobsched.raft.log import RaftLog
from jobsched.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    TimeoutNowRequest,
    TimeoutNowResponse,
    VoteRequest,
    VoteResponse,
)
from jobsched.raft.storage import Snapshot, StoredState

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"
# A draining node stands for election only after this many election timeouts in a row
# without a leader: as a last resort, when no other node can win (e.g. their logs are
# behind its own), and it hands leadership over as soon as a peer can take it.
LAST_RESORT_TIMEOUTS = 3
# A follower heard from within this long still counts when compaction decides which
# entries to keep: one that is busy installing a snapshot of a large table (seconds,
# during which it cannot answer) must find the entries after that snapshot still there,
# or it would need another snapshot, and another.
COMPACTION_PATIENCE_SECONDS = 5.0

Request = AppendEntriesRequest | VoteRequest | InstallSnapshotRequest | TimeoutNowRequest
Response = AppendEntriesResponse | VoteResponse | InstallSnapshotResponse | TimeoutNowResponse
TransferResult = tuple[bool, str, int]


@dataclass(frozen=True)
class RaftTimings:
    """Every duration of the protocol, in seconds (spec defaults)."""

    election_timeout_min: float = 0.150
    election_timeout_max: float = 0.300
    heartbeat_interval: float = 0.050
    transfer_timeout: float = 2.0
    commit_timeout: float = 5.0
    # A follower that has nothing in flight hears a new commit index this long after
    # it moved (sooner when the leader sends it entries anyway), not at the next
    # heartbeat; the wait lets a busy leader carry it with the next entries instead.
    commit_notice_delay: float = 0.003

    def __post_init__(self) -> None:
        if not 0 < self.election_timeout_min <= self.election_timeout_max:
            raise ValueError("need 0 < election_timeout_min <= election_timeout_max")
        if not 0 < self.heartbeat_interval < self.election_timeout_min:
            raise ValueError("need 0 < heartbeat_interval < election_timeout_min")
        if self.transfer_timeout <= 0 or self.commit_timeout <= 0:
            raise ValueError("transfer and commit timeouts must be positive")
        if not 0 <= self.commit_notice_delay < self.heartbeat_interval:
            raise ValueError("need 0 <= commit_notice_delay < heartbeat_interval")


@dataclass(frozen=True)
class RaftLimits:
    """Sizes and counts that bound memory, message size and pipelining."""

    max_pending_proposals: int = 256
    compaction_threshold: int = 1000
    max_append_bytes: int = 1 << 20
    snapshot_chunk_bytes: int = 256 << 10
    max_inflight_appends: int = 1
    # Committed entries handed out per Ready: a node far behind (just restarted, or
    # paused) applies its backlog a slice at a time, answering peers in between.
    max_apply_entries: int = 128
    max_apply_bytes: int = 64 << 10

    def __post_init__(self) -> None:
        if (
            min(
                self.max_pending_proposals,
                self.compaction_threshold,
                self.max_append_bytes,
                self.snapshot_chunk_bytes,
                self.max_inflight_appends,
                self.max_apply_entries,
                self.max_apply_bytes,
            )
            < 1
        ):
            raise ValueError("Raft limits must be positive")


@dataclass
class Ready:
    """What the node must do after some events; see the module docstring for the order."""

    seq: int
    hard_state: tuple[int, int] | None
    snapshot: Snapshot | None
    truncate_from: int | None
    entries: list[LogEntry]
    messages: list[tuple[int, Request]]
    restore: Snapshot | None
    committed: list[LogEntry]
    role_changed: bool
    transfer_result: TransferResult | None

    @property
    def has_writes(self) -> bool:
        return bool(self.hard_state or self.snapshot or self.truncate_from or self.entries)

    @property
    def own_compaction(self) -> bool:
        """The snapshot to save is this node's own compaction (no leader's snapshot
        installed, no log cut in the same turn): a store may keep its entries instead."""
        return self.snapshot is not None and self.restore is None and self.truncate_from is None


@dataclass
class Progress:
    """What a leader knows about one follower's log."""

    next_index: int
    match_index: int = 0
    probing: bool = True
    inflight: list[Request] = field(default_factory=list)
    last_contact: float | None = None
    sending_snapshot: Snapshot | None = None
    snapshot_offset: int = 0
    commit_sent: int = 0  # the highest leader_commit sent to this follower

    def is_inflight(self, request: Request) -> bool:
        return any(r is request for r in self.inflight)


@dataclass
class _Transfer:
    target: int
    deadline: float
    start_term: int
    timeout_now_sent: bool = False


@dataclass
class _SnapshotReceive:
    key: tuple[int, int, int, int]
    data: bytearray


class RaftCore:
    """One node's Raft state; see the module docstring for how to drive it."""

    def __init__(
        self,
        node_id: int,
        peer_ids,
        stored: StoredState,
        now: float,
        rng: random.Random,
        timings: RaftTimings = RaftTimings(),
        limits: RaftLimits = RaftLimits(),
    ) -> None:
        if node_id in peer_ids or node_id <= 0:
            raise ValueError(f"bad node id {node_id}")
        self.node_id = node_id
        self.peers = tuple(sorted(peer_ids))
        self.quorum = (len(self.peers) + 1) // 2 + 1
        self.timings = timings
        self.limits = limits
        self._rng = rng

        self.term = stored.term
        self.voted_for = stored.voted_for
        self.snapshot = stored.snapshot
        snap_index = stored.snapshot.index if stored.snapshot else 0
        snap_term = stored.snapshot.term if stored.snapshot else 0
        self.log = RaftLog(
            snap_index, snap_term, [e for e in stored.entries if e.index > snap_index]
        )
        self.commit_index = snap_index
        self.applied_index = snap_index
        self.role = FOLLOWER
        self.leader_id = 0
        # False on a draining node: it votes and follows, and stands for election only
        # as a last resort (LAST_RESORT_TIMEOUTS).
        self.may_lead = True
        self._timeouts_without_leader = 0

        self._emitted_index = snap_index
        self._durable_index = self.log.last_index
        self._pending_writes: list[list[int]] = []
        self._last_leader_contact: float | None = None
        # The leader contact after which this follower last excused its own stall.
        self._stall_excused_after: float | None = None
        # (leader id, the lowest index it said a live follower lacks), as last heard
        self._retain_word = (0, 0)
        self._leader_since = now
        self._votes: set = set()
        self._progress: dict[int, Progress] = {}
        self._transfer: _Transfer | None = None
        self._receiving: _SnapshotReceive | None = None
        self._heartbeat_due = math.inf
        self._notice_due = math.inf
        self._now = now
        self._election_due = now
        self._reset_election_timer(now)

        self._seq = 0
        self._hard_state_dirty = False
        self._unstable: list[LogEntry] = []
        self._snapshot_out: Snapshot | None = None
        self._truncate_out: int | None = None
        self._restore_out: Snapshot | None = None
        self._messages: list[tuple[int, Request]] = []
        self._role_changed = False
        self._transfer_result: TransferResult | None = None

    # ------------------------------------------------------------------ queries

    @property
    def accepting_proposals(self) -> bool:
        return self.role == LEADER and self._transfer is None

    @property
    def transfer_target(self) -> int:
        """The node leadership is being handed to (0 = no transfer under way)."""
        return self._transfer.target if self._transfer else 0

    @property
    def commits_waiting(self) -> bool:
        """Committed entries not handed out yet (more than one Ready's slice)."""
        return self.commit_index > self._emitted_index

    def progress(self) -> dict[int, Progress]:
        """The leader's view of each follower ({} when not leader); read only."""
        return self._progress

    def retain_from(self) -> int:
        """The lowest log index a live follower still lacks (0: none), which compaction
        keeps: the leader's own view, carried on its AppendEntries to the followers, so
        that whichever of them leads next still has those entries. A new leader keeps
        what its predecessor asked for until its predecessor's followers answer it (or
        stay silent for COMPACTION_PATIENCE_SECONDS)."""
        predecessor, word = self._retain_word
        if self.role != LEADER:
            return word
        now = self._now
        needed = [
            p.match_index + 1
            for p in self._progress.values()
            if p.last_contact is not None and now - p.last_contact < COMPACTION_PATIENCE_SECONDS
        ]
        if (
            word
            and now - self._leader_since < COMPACTION_PATIENCE_SECONDS
            and any(
                p.last_contact is None for peer, p in self._progress.items() if peer != predecessor
            )
        ):
            needed.append(word)
        return min(needed, default=0)

    def next_deadline(self) -> float:
        """The time at which `tick` has something to do."""
        due = (
            min(self._heartbeat_due, self._notice_due)
            if self.role == LEADER
            else self._election_due
        )
        if self._transfer is not None:
            due = min(due, self._transfer.deadline)
        return due

    def has_quorum(self, now: float) -> bool:
        """Leader: heard from a majority lately; follower: heard from a live leader."""
        if self.role == LEADER:
            return self._quorum_active(now)
        return (
            self.role == FOLLOWER
            and self.leader_id != 0
            and self._last_leader_contact is not None
            and now - self._last_leader_contact < self.timings.election_timeout_max
        )

    def timer_late(self, late: float, now: float) -> None:
        """The node's timer, due `late` seconds before `now`, fired only now: for that
        long the node did not run and read nothing. A follower's leader may then seem
        silent through the follower's own deafness (every node held at once by a large
        apply, say, the leader included), so before standing it gives the leader two
        heartbeats to be heard. Once per contact with the leader, so that a node whose
        timer is always late still stands. (A leader excuses its own pause in `tick`.)"""
        if (
            late <= self.timings.heartbeat_interval
            or self.role != FOLLOWER
            or self.leader_id == 0
            or self._stall_excused_after == self._last_leader_contact
        ):
            return
        self._stall_excused_after = self._last_leader_contact
        self._election_due = max(self._election_due, now + 2 * self.timings.heartbeat_interval)

    def compaction_due(self) -> bool:
        return self.applied_index - self.log.snapshot_index > self.limits.compaction_threshold

    # ------------------------------------------------------------------ events

    def tick(self, now: float) -> None:
        """Time passed: send heartbeats and commit notices, check quorum, or start an
        election."""
        self._now = now
        if self.role == LEADER:
            if now >= self._notice_due:
                self._notice_due = math.inf
                for peer in self._progress:
                    self._tell_commit(peer)
            if now >= self._heartbeat_due:
                self._excuse_own_pause(now - self._heartbeat_due, now)
                self._heartbeat_due = now + self.timings.heartbeat_interval
                if not self._quorum_active(now):
                    self._become_follower(self.term, 0, now)
                else:
                    self._broadcast_heartbeat(now)
        elif now >= self._election_due:
            if self.may_lead or self._timeouts_without_leader >= LAST_RESORT_TIMEOUTS:
                self._campaign(now, pre_vote=True)
            else:
                self._timeouts_without_leader += 1
                self._reset_election_timer(now)
        if self.role == LEADER and not self.may_lead and self._transfer is None:
            self._hand_over(now)
        self._check_transfer(now)

    def _hand_over(self, now: float) -> None:
        """A draining leader (elected as a last resort) gives leadership to the live peer
        furthest along; the transfer catches it up first."""
        live = [
            (progress.match_index, -peer)
            for peer, progress in self._progress.items()
            if progress.last_contact is not None
            and now - progress.last_contact < self.timings.election_timeout_max
        ]
        if live:
            self.transfer_leadership(-max(live)[1], now)

    def propose(self, command: bytes, now: float) -> LogEntry:
        """Append a command as leader and start replicating it; returns its entry."""
        if not self.accepting_proposals:
            raise RuntimeError("this node does not accept proposals now")
        self._now = now
        entry = LogEntry(self.term, self.log.last_index + 1, command)
        self._append_local([entry])
        for peer in self.peers:
            self._send_append(peer, now)
        return entry

    def leader_disconnected(self, leader_id: int, term: int, now: float) -> bool:
        """The connection on which the leader of `term` sent this follower its entries
        closed (its process ended, or the network dropped it). A follower of that
        leader stands for election when its lease ends (the shortest election timeout
        after it last heard the leader) instead of after its own random timeout: no
        sooner, so that no successor starts earlier than without this (the worker
        fencing's arithmetic counts on it: docs/reliability.md). Pre-vote keeps a live
        leader in place: a peer that still hears it refuses. Returns whether this
        node followed that leader."""
        self._now = now
        if self.role != FOLLOWER or self.leader_id != leader_id or self.term != term:
            return False
        if self.may_lead:
            self._election_due = min(self._election_due, self._lease_end())
        return True

    def receive_request(self, msg: Request, now: float) -> Response:
        """Answer a peer's request (hold the answer until the writes are durable)."""
        self._now = now
        if isinstance(msg, AppendEntriesRequest):
            response = self._on_append(msg, now)
        elif isinstance(msg, VoteRequest):
            response = self._on_vote(msg, now)
        elif isinstance(msg, InstallSnapshotRequest):
            response = self._on_install_snapshot(msg, now)
        elif isinstance(msg, TimeoutNowRequest):
            response = self._on_timeout_now(msg, now)
        else:
            raise TypeError(f"not a Raft request: {msg!r}")
        self._check_transfer(now)
        return response

    def receive_response(
        self, peer_id: int, request: Request, response: Response, now: float
    ) -> None:
        """A peer answered `request` (a message this core asked to send)."""
        self._now = now
        pre_vote_grant = (
            isinstance(response, VoteResponse) and request.pre_vote and response.vote_granted
        )
        if response.term > self.term and not pre_vote_grant:
            self._become_follower(response.term, 0, now)
        elif isinstance(response, VoteResponse):
            self._on_vote_response(peer_id, request, response, now)
        elif self.role == LEADER and request.term == self.term and peer_id in self._progress:
            progress = self._progress[peer_id]
            progress.last_contact = now
            if isinstance(response, AppendEntriesResponse):
                self._on_append_response(peer_id, progress, request, response, now)
            elif isinstance(response, InstallSnapshotResponse):
                self._on_snapshot_response(peer_id, progress, request, now)
        self._check_transfer(now)

    def send_failed(self, peer_id: int, request: Request, now: float) -> None:
        """`request` to a peer got no answer; resend from what is known on the next beat."""
        progress = self._progress.get(peer_id)
        if self.role == LEADER and progress is not None and progress.is_inflight(request):
            if progress.sending_snapshot is None:
                # Resend what was lost, not everything after match_index: a new
                # leader's match_index is 0, which would mean a whole snapshot.
                lost = min(r.prev_log_index for r in progress.inflight) + 1
                progress.next_index = max(progress.match_index + 1, lost)
                progress.probing = True
            progress.inflight.clear()
        self._check_transfer(now)

    def persisted(self, seq: int) -> None:
        """Every write of the Ready numbered `seq` (and those before) is durable."""
        while self._pending_writes and self._pending_writes[0][0] <= seq:
            self._durable_index = max(self._durable_index, self._pending_writes.pop(0)[1])
        self._maybe_commit()

    def applied_to(self, index: int) -> None:
        """The state machine has applied every committed entry up to `index`."""
        self.applied_index = index

    def compact(self, index: int, data: bytes) -> None:
        """Replace the log up to `index` (applied) by a snapshot of the applied state."""
        if not self.log.snapshot_index < index <= self.applied_index:
            raise ValueError(f"cannot compact to {index}")
        snapshot = Snapshot(index, self.log.term_at(index), data)
        self.log.compact(snapshot.index, snapshot.term)
        self.snapshot = snapshot
        self._snapshot_out = snapshot
        self._unstable = [e for e in self._unstable if e.index > index]

    def transfer_leadership(self, target: int, now: float) -> None:
        """Stop taking proposals, catch `target` up, then send it TimeoutNow."""
        if self.role != LEADER or target not in self._progress or self._transfer:
            raise ValueError(f"cannot transfer leadership to {target} now")
        self._transfer = _Transfer(target, now + self.timings.transfer_timeout, self.term)
        self._maybe_send_timeout_now(now)

    def step_down(self, now: float) -> None:
        """Stop leading or campaigning (e.g. the node's storage failed)."""
        self._become_follower(self.term, 0, now)
        self._election_due = math.inf
        self._check_transfer(now)

    def take_ready(self, apply: bool = True) -> Ready | None:
        """Hand out everything collected since the last call (None when nothing);
        with `apply` False, committed entries wait for a later call (`commits_waiting`),
        as they do in a Ready that carries a snapshot to restore."""
        committed: list[LogEntry] = []
        if apply and self.commits_waiting and self._restore_out is None:
            start = self._emitted_index + 1
            end = min(self.commit_index, self._emitted_index + self.limits.max_apply_entries)
            committed = self.log.slice(start, end + 1, self.limits.max_apply_bytes)
            self._emitted_index = committed[-1].index
        if not (
            self._hard_state_dirty
            or self._unstable
            or self._snapshot_out
            or self._truncate_out
            or self._messages
            or committed
            or self._role_changed
            or self._transfer_result
            or self._restore_out
        ):
            return None
        self._seq += 1
        ready = Ready(
            seq=self._seq,
            hard_state=(self.term, self.voted_for) if self._hard_state_dirty else None,
            snapshot=self._snapshot_out,
            truncate_from=self._truncate_out,
            entries=self._unstable,
            messages=self._messages,
            restore=self._restore_out,
            committed=committed,
            role_changed=self._role_changed,
            transfer_result=self._transfer_result,
        )
        if ready.has_writes:
            self._pending_writes.append([self._seq, self.log.last_index])
        self._hard_state_dirty = False
        self._unstable = []
        self._snapshot_out = None
        self._truncate_out = None
        self._restore_out = None
        self._messages = []
        self._role_changed = False
        self._transfer_result = None
        return ready

    # ------------------------------------------------------------------ roles

    def _reset_election_timer(self, now: float) -> None:
        t = self.timings
        self._election_due = now + self._rng.uniform(t.election_timeout_min, t.election_timeout_max)

    def _set_role(self, role: str, leader_id: int) -> None:
        if role != self.role or leader_id != self.leader_id:
            self._role_changed = True
        self.role = role
        self.leader_id = leader_id

    def _set_term(self, term: int) -> None:
        self.term = term
        self.voted_for = 0
        self._hard_state_dirty = True
        self._role_changed = True

    def _become_follower(self, term: int, leader_id: int, now: float) -> None:
        if term > self.term:
            self._set_term(term)
        self._set_role(FOLLOWER, leader_id)
        self._progress = {}
        self._votes = set()
        self._heartbeat_due = math.inf
        self._notice_due = math.inf
        self._reset_election_timer(now)

    def _follow(self, term: int, leader_id: int, now: float) -> None:
        """A current leader spoke: follow it and push the election back."""
        if term > self.term or self.role != FOLLOWER:
            self._become_follower(term, leader_id, now)
        else:
            self._set_role(FOLLOWER, leader_id)
            self._reset_election_timer(now)
        self._last_leader_contact = now
        self._timeouts_without_leader = 0

    def _campaign(self, now: float, pre_vote: bool) -> None:
        self._reset_election_timer(now)
        if pre_vote:
            self._set_role(PRE_CANDIDATE, 0)
            vote_term = self.term + 1
        else:
            self._set_role(CANDIDATE, 0)
            self._set_term(self.term + 1)
            self.voted_for = self.node_id
            vote_term = self.term
        self._votes = {self.node_id}
        if len(self._votes) >= self.quorum:
            self._won_vote(now, pre_vote)
            return
        request = VoteRequest(
            vote_term, self.node_id, self.log.last_index, self.log.last_term, pre_vote
        )
        self._messages.extend((peer, request) for peer in self.peers)

    def _won_vote(self, now: float, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(now, pre_vote=False)
        else:
            self._become_leader(now)

    def _become_leader(self, now: float) -> None:
        self._set_role(LEADER, self.node_id)
        self._leader_since = now
        self._heartbeat_due = now + self.timings.heartbeat_interval
        self._progress = {p: Progress(next_index=self.log.last_index + 1) for p in self.peers}
        self._append_local([LogEntry(self.term, self.log.last_index + 1)])
        for peer in self.peers:
            self._send_append(peer, now)
        self._maybe_commit()

    def _excuse_own_pause(self, late: float, now: float) -> None:
        """The heartbeat tick came `late`: for that long this leader did not run, sent
        nothing and so could hear nothing. Its pause is not the followers' silence:
        every contact time moves forward by as much (no further than now), so that a
        busy leader does not step down before it has read the answers waiting for it."""
        if late <= self.timings.heartbeat_interval:
            return
        self._leader_since = min(now, self._leader_since + late)
        for progress in self._progress.values():
            if progress.last_contact is not None:
                progress.last_contact = min(now, progress.last_contact + late)

    def _quorum_active(self, now: float) -> bool:
        window = self.timings.election_timeout_max
        if now - self._leader_since < window:
            return True
        heard = sum(
            1
            for p in self._progress.values()
            if p.last_contact is not None and now - p.last_contact < window
        )
        return heard + 1 >= self.quorum

    # ------------------------------------------------------------------ votes

    def _log_up_to_date(self, last_index: int, last_term: int) -> bool:
        my_term = self.log.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.log.last_index)

    def _on_vote(self, req: VoteRequest, now: float) -> VoteResponse:
        known = req.candidate_id in self.peers
        up_to_date = self._log_up_to_date(req.last_log_index, req.last_log_term)
        if req.pre_vote:
            lease_end = self._lease_end()
            in_lease = self.role == LEADER or now < lease_end
            grant = known and not in_lease and req.term > self.term and up_to_date
            if known and self.role != LEADER and (in_lease or not up_to_date):
                self._stand_sooner(lease_end if in_lease else now)
            if grant:
                self._give_way(now)
                if self.role == PRE_CANDIDATE and self._yields_to(req):
                    self._become_follower(self.term, 0, now)
            return VoteResponse(req.term if grant else self.term, grant)
        if req.term < self.term:
            return VoteResponse(self.term, False)
        if req.term > self.term:
            self._become_follower(req.term, 0, now)
        grant = known and self.voted_for in (0, req.candidate_id) and up_to_date
        if grant:
            if self.voted_for != req.candidate_id:
                self.voted_for = req.candidate_id
                self._hard_state_dirty = True
            self._reset_election_timer(now)
        return VoteResponse(self.term, grant)

    def _yields_to(self, req: VoteRequest) -> bool:
        """Two nodes whose timers fired together would both pass their pre-votes and
        split the real vote; the one with the shorter log, or with the higher id when
        the logs are equal, steps back and lets the other stand."""
        theirs = (req.last_log_term, req.last_log_index)
        mine = (self.log.last_term, self.log.last_index)
        return theirs > mine or (theirs == mine and req.candidate_id < self.node_id)

    def _give_way(self, now: float) -> None:
        """This node granted a pre-vote: it stands itself no sooner than the shortest
        election timeout from now, time for the peer to win its real vote. Standing at
        once (its own lease ending a moment later) could meet a grant the peer gives
        while it still waits to read ours: both would stand in one term and split it."""
        self._election_due = max(self._election_due, now + self.timings.election_timeout_min)

    def _lease_end(self) -> float:
        """Until when this follower refuses pre-votes: it heard a live leader lately."""
        if self.leader_id == 0 or self._last_leader_contact is None:
            return -math.inf
        return self._last_leader_contact + self.timings.election_timeout_min

    def _stand_sooner(self, at: float) -> None:
        """A peer that no longer hears the leader asked for a vote this node does not
        give. Waiting for this node's own random timeout would then cost the cluster a
        second election timeout, so it stands itself: at the end of its lease when it
        still hears the leader (a live leader's next heartbeat cancels that), at once
        when its log is ahead of the peer's. That holds for a pre-candidate too: the
        peer may have refused its pre-vote a moment ago and would grant it now."""
        if self.role in (FOLLOWER, PRE_CANDIDATE) and self.may_lead:
            self._election_due = min(self._election_due, at)

    def _on_vote_response(
        self, peer_id: int, req: VoteRequest, resp: VoteResponse, now: float
    ) -> None:
        if req.pre_vote:
            current = self.role == PRE_CANDIDATE and req.term == self.term + 1
        else:
            current = self.role == CANDIDATE and req.term == self.term
        if current and resp.vote_granted:
            self._votes.add(peer_id)
            if len(self._votes) >= self.quorum:
                self._won_vote(now, req.pre_vote)

    # ------------------------------------------------------------------ replication

    def _append_local(self, entries: list[LogEntry]) -> None:
        self.log.append(entries)
        self._unstable.extend(entries)

    def _truncate(self, index: int) -> None:
        """Drop the local log from `index` on (a conflict with the leader's log)."""
        self.log.truncate_from(index)
        self._unstable = [e for e in self._unstable if e.index < index]
        self._cap_durable(index - 1)

    def _cap_durable(self, index: int) -> None:
        self._durable_index = min(self._durable_index, index)
        for pending in self._pending_writes:
            pending[1] = min(pending[1], index)

    def _send_append(self, peer: int, now: float) -> None:
        """Send the entries `peer` lacks, if the pipeline has room."""
        progress = self._progress[peer]
        if progress.sending_snapshot is not None:
            return
        limit = 1 if progress.probing else self.limits.max_inflight_appends
        if len(progress.inflight) >= limit:
            return
        if progress.next_index <= self.log.snapshot_index:
            progress.sending_snapshot = self.snapshot
            progress.snapshot_offset = 0
            self._send_snapshot_chunk(peer, progress)
            return
        entries = self.log.slice(progress.next_index, max_bytes=self.limits.max_append_bytes)
        if not entries:
            return
        prev = progress.next_index - 1
        request = AppendEntriesRequest(
            self.term,
            self.node_id,
            prev,
            self.log.term_at(prev),
            entries,
            self.commit_index,
            self.retain_from(),
        )
        progress.inflight.append(request)
        progress.next_index = entries[-1].index + 1
        progress.commit_sent = self.commit_index
        self._messages.append((peer, request))

    def _announce_commit(self) -> None:
        """The commit index moved: followers hear it with their next entries, or after
        `commit_notice_delay` (see `_tell_commit`)."""
        delay = self.timings.commit_notice_delay
        if delay == 0:
            for peer in self._progress:
                self._tell_commit(peer)
        else:
            self._notice_due = min(self._notice_due, self._now + delay)

    def _tell_commit(self, peer: int) -> None:
        """A follower with nothing in flight that has not heard the commit index gets
        the entries it lacks or else an empty AppendEntries, instead of waiting for the
        next heartbeat (a follower applies, and its worker starts, only then)."""
        progress = self._progress[peer]
        if progress.inflight or progress.sending_snapshot is not None:
            return
        if progress.next_index <= self.log.last_index:
            self._send_append(peer, 0.0)
            return
        prev = progress.match_index
        prev_term = self.log.term_at(prev)
        if progress.commit_sent >= self.commit_index or prev_term is None:
            return
        progress.commit_sent = self.commit_index
        self._messages.append(
            (
                peer,
                AppendEntriesRequest(
                    self.term,
                    self.node_id,
                    prev,
                    prev_term,
                    [],
                    self.commit_index,
                    self.retain_from(),
                ),
            )
        )

    def _send_snapshot_chunk(self, peer: int, progress: Progress) -> None:
        snapshot = progress.sending_snapshot
        offset = progress.snapshot_offset
        chunk = snapshot.data[offset : offset + self.limits.snapshot_chunk_bytes]
        request = InstallSnapshotRequest(
            self.term,
            self.node_id,
            snapshot.index,
            snapshot.term,
            offset,
            chunk,
            offset + len(chunk) >= len(snapshot.data),
        )
        progress.inflight = [request]
        self._messages.append((peer, request))

    def _broadcast_heartbeat(self, now: float) -> None:
        """An empty AppendEntries to each follower; also resume stalled replication."""
        retain_from = self.retain_from()
        for peer, progress in self._progress.items():
            if not progress.inflight:
                if progress.sending_snapshot is not None:
                    self._send_snapshot_chunk(peer, progress)
                else:
                    self._send_append(peer, now)
            prev = progress.match_index
            prev_term = self.log.term_at(prev)
            if prev_term is None:
                prev, prev_term = 0, 0
            progress.commit_sent = max(progress.commit_sent, self.commit_index)
            self._messages.append(
                (
                    peer,
                    AppendEntriesRequest(
                        self.term,
                        self.node_id,
                        prev,
                        prev_term,
                        [],
                        self.commit_index,
                        retain_from,
                    ),
                )
            )

    def _on_append(self, req: AppendEntriesRequest, now: float) -> AppendEntriesResponse:
        if req.term < self.term:
            return AppendEntriesResponse(self.term, False, self.log.last_index)
        self._follow(req.term, req.leader_id, now)
        self._retain_word = (req.leader_id, req.retain_from)
        prev = req.prev_log_index
        entries = req.entries
        if prev < self.commit_index:
            # The committed prefix matches every leader's log: skip what it covers.
            entries = entries[self.commit_index - prev :]
            prev = self.commit_index
        elif self.log.term_at(prev) != req.prev_log_term:
            return AppendEntriesResponse(self.term, False, self._reject_hint(prev))
        self._store_entries(entries)
        last_new = prev + len(entries)
        if req.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(req.leader_commit, last_new))
        return AppendEntriesResponse(self.term, True, last_new)

    def _store_entries(self, entries: list[LogEntry]) -> None:
        """Append what is new, truncating only where an entry really conflicts."""
        for i, entry in enumerate(entries):
            term = self.log.term_at(entry.index)
            if term is None:
                self._append_local(entries[i:])
                return
            if term != entry.term:
                self._truncate(entry.index)
                self._append_local(entries[i:])
                return

    def _reject_hint(self, prev: int) -> int:
        """Where the leader should retry: our last index, or before a conflicting term."""
        if prev > self.log.last_index:
            return self.log.last_index
        conflict_term = self.log.term_at(prev)
        index = prev - 1
        floor = max(self.commit_index, self.log.snapshot_index)
        while index > floor and self.log.term_at(index) == conflict_term:
            index -= 1
        return index

    def _on_append_response(
        self,
        peer: int,
        progress: Progress,
        req: AppendEntriesRequest,
        resp: AppendEntriesResponse,
        now: float,
    ) -> None:
        if resp.success:
            if resp.match_index > progress.match_index:
                progress.match_index = resp.match_index
            progress.next_index = max(progress.next_index, progress.match_index + 1)
            if progress.is_inflight(req):
                progress.inflight = [r for r in progress.inflight if r is not req]
                progress.probing = False
            self._maybe_commit()
            self._send_append(peer, now)
            if progress.commit_sent < self.commit_index:
                self._announce_commit()
            self._maybe_send_timeout_now(now)
            return
        hint = resp.match_index
        if req.prev_log_index <= progress.match_index:
            # The follower lost entries it had acknowledged (it restarted in memory).
            progress.match_index = min(progress.match_index, hint)
            progress.next_index = hint + 1
        elif progress.is_inflight(req):
            progress.next_index = max(progress.match_index + 1, min(hint + 1, req.prev_log_index))
        else:
            return
        progress.inflight.clear()
        progress.sending_snapshot = None
        progress.probing = True
        self._send_append(peer, now)

    def _maybe_commit(self) -> None:
        if self.role != LEADER:
            return
        matches = sorted(
            [min(self._durable_index, self.log.last_index)]
            + [p.match_index for p in self._progress.values()],
            reverse=True,
        )
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            self.commit_index = candidate
            self._announce_commit()

    # ------------------------------------------------------------------ snapshots

    def _on_install_snapshot(
        self, req: InstallSnapshotRequest, now: float
    ) -> InstallSnapshotResponse:
        response = InstallSnapshotResponse(max(self.term, req.term))
        if req.term < self.term:
            return response
        self._follow(req.term, req.leader_id, now)
        if req.last_included_index <= self.commit_index:
            self._receiving = None
            return response
        key = (req.term, req.leader_id, req.last_included_index, req.last_included_term)
        receiving = self._receiving
        if receiving is not None and receiving.key == key and req.offset < len(receiving.data):
            return response
        if req.offset == 0:
            receiving = self._receiving = _SnapshotReceive(key, bytearray())
        if receiving is None or receiving.key != key or req.offset != len(receiving.data):
            return response
        receiving.data += req.data
        if req.done:
            self._receiving = None
            self._install(
                Snapshot(req.last_included_index, req.last_included_term, bytes(receiving.data))
            )
        return response

    def _install(self, snapshot: Snapshot) -> None:
        """Adopt a leader's snapshot newer than anything committed here."""
        agrees = self.log.term_at(snapshot.index) == snapshot.term
        self.log.compact(snapshot.index, snapshot.term)
        if agrees:
            self._unstable = [e for e in self._unstable if e.index > snapshot.index]
        else:
            self._unstable = []
            self._truncate_out = min(self._truncate_out or math.inf, snapshot.index + 1)
            self._cap_durable(snapshot.index)
        self.snapshot = snapshot
        self._snapshot_out = snapshot
        self._restore_out = snapshot
        self.commit_index = snapshot.index
        self.applied_index = snapshot.index
        self._emitted_index = snapshot.index

    def _on_snapshot_response(
        self, peer: int, progress: Progress, req: InstallSnapshotRequest, now: float
    ) -> None:
        if not progress.is_inflight(req):
            return
        progress.inflight.clear()
        if not req.done:
            progress.snapshot_offset = req.offset + len(req.data)
            self._send_snapshot_chunk(peer, progress)
            return
        progress.sending_snapshot = None
        progress.match_index = max(progress.match_index, req.last_included_index)
        progress.next_index = progress.match_index + 1
        self._maybe_commit()
        self._send_append(peer, now)
        self._maybe_send_timeout_now(now)

    # ------------------------------------------------------------------ transfer

    def _on_timeout_now(self, req: TimeoutNowRequest, now: float) -> TimeoutNowResponse:
        if (
            self.may_lead
            and req.term == self.term
            and self.role == FOLLOWER
            and self.leader_id != 0
            and req.leader_id == self.leader_id
        ):
            self._campaign(now, pre_vote=False)
            return TimeoutNowResponse(self.term, True)
        return TimeoutNowResponse(self.term, False)

    def _maybe_send_timeout_now(self, now: float) -> None:
        transfer = self._transfer
        if transfer is None or transfer.timeout_now_sent or self.role != LEADER:
            return
        if self._progress[transfer.target].match_index == self.log.last_index:
            self._messages.append((transfer.target, TimeoutNowRequest(self.term, self.node_id)))
            transfer.timeout_now_sent = True
            transfer.deadline = now + self.timings.transfer_timeout
        else:
            self._send_append(transfer.target, now)

    def _check_transfer(self, now: float) -> None:
        transfer = self._transfer
        if transfer is None:
            return
        target = transfer.target
        new_leader = self.leader_id if self.term > transfer.start_term else 0
        if new_leader == target:
            result = (True, f"Leadership transferred to node {target}", target)
        elif new_leader not in (0, self.node_id):
            result = (
                False,
                f"Node {new_leader} won the election instead of target node {target}",
                new_leader,
            )
        elif self.role != LEADER and not transfer.timeout_now_sent:
            result = (False, "Not the leader", self.leader_id)
        elif now >= transfer.deadline:
            if transfer.timeout_now_sent:
                message = f"Target node {target} did not win the election in time"
            else:
                message = (
                    f"Target node {target} did not catch up within "
                    f"{self.timings.transfer_timeout:g}s"
                )
            result = (False, message, self.leader_id)
        else:
            return
        self._transfer = None
        self._transfer_result = result
