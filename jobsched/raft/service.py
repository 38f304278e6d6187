"""RaftService: runs a RaftCore on the reactor.

It owns the timers, makes the core's writes durable before anything that promises
durability leaves the node, sends the core's messages through the transport, applies
committed entries to the state machine and wakes the proposals waiting on them.
Everything here runs on the reactor thread; nothing blocks.

A failed durable write is final: the service fails every waiting proposal, stops
serving, logs one line and calls `on_storage_failure` with it (the node ends the
process there, so that a supervisor restarts it from what is on disk). So is a
leader's snapshot that cannot be restored (the log already counts it as applied).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

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
from jobsched.metrics import NodeMetrics
from jobsched.raft.core import CANDIDATE, FOLLOWER, LEADER, RaftCore, RaftLimits, RaftTimings, Ready
from jobsched.raft.messages import AppendEntriesRequest, InstallSnapshotRequest, LogEntry
from jobsched.raft.storage import Snapshot, StoredState

__all__ = ["PeerProgress", "RaftLimits", "RaftService", "RaftStatus", "RaftTimings"]

log = Logger()

# The core's messages that promise nothing about this node's disk: sent at once.
_SEND_BEFORE_DURABLE = (AppendEntriesRequest, InstallSnapshotRequest)
# For a live follower that lags (RaftCore.retain_from) every node keeps at most this
# many compaction thresholds of applied entries (32,000 by default, about 10 MB: more
# than single writes at this machine's fastest rate fill in COMPACTION_PATIENCE_SECONDS),
# then compacts regardless.
COMPACTION_BACKLOG_THRESHOLDS = 32
# A compaction's snapshot is built this many job records a reactor turn (about 6 ms
# on this machine when none was encoded before).
SNAPSHOT_STEP_RECORDS = 2000
# A leader's snapshot is restored this many job records a reactor turn (read, then
# loaded: about 2 ms on this machine).
RESTORE_STEP_RECORDS = 1000


@dataclass
class _Restoring:
    """A leader's snapshot being restored, a slice a reactor turn."""

    snapshot: Snapshot
    restore: ISnapshotRestore
    began: float
    steps: int = 0


@dataclass(frozen=True)
class RaftStatus:
    """One node's view of the cluster, for status APIs and readiness."""

    node_id: int
    role: str
    current_term: int
    leader_id: int
    leader_address: str | None
    commit_index: int
    last_applied: int
    last_log_index: int
    first_log_index: int
    has_quorum: bool
    # Leader only: the latest time by which a majority (this node included) had
    # accepted this leader, as the send time of requests they acknowledged in its term.
    quorum_confirmed_at: float | None = None


@dataclass(frozen=True)
class PeerProgress:
    """What the leader knows of one follower."""

    match_index: int
    next_index: int
    last_contact_seconds: float | None


@dataclass
class _Waiter:
    term: int
    deferred: defer.Deferred
    proposed_at: float
    deadline: float


@implementer(IRaftService)
class RaftService(Service):
    """IRaftService: consensus for the rest of the node, driven by the reactor.

    `on_storage_failure(message)` is called once, when a durable write fails (or a
    leader's snapshot cannot be restored), with one line naming what failed (for
    SqliteStorage: the file and the OS error)."""

    def __init__(
        self,
        node_id: int,
        peers: dict[int, str],
        self_address: str,
        storage: IRaftStorage,
        transport: IRaftTransport,
        state_machine: IStateMachine,
        clock: IReactorTime,
        rng: random.Random | None = None,
        timings: RaftTimings = RaftTimings(),
        limits: RaftLimits = RaftLimits(),
        metrics: NodeMetrics | None = None,
        on_storage_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.peers = dict(peers)
        self.self_address = self_address
        self.timings = timings
        self.limits = limits
        self._storage = storage
        self._transport = transport
        self._state_machine = state_machine
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._on_storage_failure = on_storage_failure
        self._core: RaftCore | None = None
        self._failed = False
        self._last_applied = 0
        self._observers: list[Callable[[str], None]] = []
        self._waiters: dict[int, _Waiter] = {}
        self._expiry_call = None
        self._resume_call = None  # applies at the next turn (a backlog slice, or answered entries)
        self._timer = None
        self._timer_due = math.inf
        self._issued_seq = 0
        self._durable_seq = 0
        self._after_durable: deque[tuple[int, defer.Deferred]] = deque()
        self._processing = False
        self._transfer: defer.Deferred | None = None
        self._pending_compaction: tuple[int, bytes] | None = None
        # (index, build, when it began) of the snapshot being built
        self._snapshot_build: tuple[int, ISnapshotBuild, float] | None = None
        self._snapshot_call = None  # the next slice of that build
        self._restoring: _Restoring | None = None  # a leader's snapshot, until restored
        self._restore_call = None  # its next slice
        self._seen_role: tuple[str, int, int] | None = None
        self._appended_at: dict[int, float] = {}  # index -> when it reached the log
        self._may_lead = True
        self._acknowledged: dict[int, tuple[int, float]] = {}  # peer -> (term, sent at)
        self._disconnect_logged: tuple[int, int] | None = None  # (leader, term)

    # ------------------------------------------------------------------ lifecycle

    def startService(self) -> None:
        """Open the storage and start the core from what it holds; a StorageError
        (damaged or foreign data) propagates: the node cannot start."""
        stored = self._storage.load()
        Service.startService(self)
        self._failed = False
        self._start_core(stored)

    def _start_core(self, stored: StoredState) -> None:
        now = self._clock.seconds()
        self._core = RaftCore(
            self.node_id, self.peers, stored, now, self._rng, self.timings, self.limits
        )
        self._restoring = None
        self._tell_core_who_may_lead()
        if stored.snapshot is not None:
            self._state_machine.restore(stored.snapshot.data)
        self._last_applied = self._core.applied_index
        self._issued_seq = self._durable_seq = 0
        self._pending_compaction = self._snapshot_build = None
        self._appended_at = {}
        self._step()

    def stopService(self) -> defer.Deferred:
        Service.stopService(self)
        self._stop_timers()
        self._fail_everything(RaftStopped)
        return self._storage.close()

    def _stop_timers(self) -> None:
        calls = (
            self._timer,
            self._expiry_call,
            self._resume_call,
            self._snapshot_call,
            self._restore_call,
        )
        for call in calls:
            if call is not None and call.active():
                call.cancel()
        self._timer = self._expiry_call = self._resume_call = None
        self._snapshot_call = self._restore_call = None
        self._timer_due = math.inf

    def _fail_everything(self, error_type) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.deferred.errback(error_type())
        pending, self._after_durable = self._after_durable, deque()
        for _, d in pending:
            d.errback(error_type())
        if self._transfer is not None:
            self._finish_transfer((False, error_type().message, 0))

    @property
    def _active(self) -> bool:
        return bool(self.running) and self._core is not None and not self._failed

    def _refusal(self) -> Exception:
        return StorageFailed() if self._failed else RaftStopped()

    # ------------------------------------------------------------------ IRaftService

    def add_observer(self, observer: Callable[[str], None]) -> None:
        self._observers.append(observer)

    def propose(self, command: bytes) -> defer.Deferred:
        refusal = self._proposal_refusal()
        if refusal is not None:
            self.metrics.proposals_refused.labels(refusal.code).inc()
            return defer.fail(refusal)
        now = self._clock.seconds()
        entry = self._core.propose(command, now)
        self.metrics.proposals.inc()
        index = entry.index
        d = defer.Deferred(lambda _: self._waiters.pop(index, None))
        self._waiters[index] = _Waiter(entry.term, d, now, now + self.timings.commit_timeout)
        if self._expiry_call is None:
            self._schedule_expiry()
        self._step()
        return d

    def _proposal_refusal(self) -> Exception | None:
        """Why a proposal cannot be taken now, or None."""
        if not self._active:
            return self._refusal()
        core = self._core
        if not core.accepting_proposals:
            if core.role == LEADER:
                return NotLeader(self._address_of(core.transfer_target))
            return NotLeader(self._leader_hint())
        if len(self._waiters) >= self.limits.max_pending_proposals:
            return Overloaded()
        return None

    def handle(self, request) -> defer.Deferred:
        if not self._active:
            return defer.fail(self._refusal())
        response = self._core.receive_request(request, self._clock.seconds())
        # Entries this request committed are applied at the next turn: the leader
        # waits for the answer, not for this node's state machine.
        self._step(apply=False)
        if not self._active:
            return defer.fail(self._refusal())
        return self._when_durable().addCallback(lambda _: response)

    def leader_disconnected(self, leader_id: int, term: int) -> None:
        if not self._active:
            return
        followed = self._core.leader_disconnected(leader_id, term, self._clock.seconds())
        if followed and self._disconnect_logged != (leader_id, term):
            # Its peer-port connection and its gRPC stream may both end: one line.
            self._disconnect_logged = (leader_id, term)
            log.info(
                "Leader {leader} disconnected; standing for election unless it speaks again",
                leader=leader_id,
                node=self.node_id,
            )
        self._step()

    @property
    def last_applied(self) -> int:
        return self._last_applied

    def is_leader(self) -> bool:
        return self._core is not None and self._core.role == LEADER

    def status(self) -> RaftStatus:
        core = self._core
        if core is None:
            return RaftStatus(self.node_id, FOLLOWER, 0, 0, None, 0, 0, 0, 1, False)
        role = core.role if core.role in (LEADER, FOLLOWER) else "candidate"
        return RaftStatus(
            node_id=self.node_id,
            role=role,
            current_term=core.term,
            leader_id=core.leader_id,
            leader_address=self._leader_hint(),
            commit_index=core.commit_index,
            last_applied=self._last_applied,
            last_log_index=core.log.last_index,
            first_log_index=core.log.first_index,
            has_quorum=self._active and core.has_quorum(self._clock.seconds()),
            quorum_confirmed_at=self._quorum_confirmed_at(core) if self._active else None,
        )

    def _quorum_confirmed_at(self, core: RaftCore) -> float | None:
        """A peer that answered a request of this leader's term had accepted it when the
        request was sent; the quorum-th latest such time (this node: now) is when a
        majority last confirmed this leader."""
        if core.role != LEADER:
            return None
        peers = (sent_at for term, sent_at in self._acknowledged.values() if term == core.term)
        times = [self._clock.seconds(), *sorted(peers, reverse=True)]
        return times[core.quorum - 1] if len(times) >= core.quorum else None

    def peer_progress(self) -> dict[int, PeerProgress]:
        if self._core is None:
            return {}
        now = self._clock.seconds()
        return {
            peer: PeerProgress(
                p.match_index,
                p.next_index,
                None if p.last_contact is None else now - p.last_contact,
            )
            for peer, p in self._core.progress().items()
        }

    def log_entries(self, start_index: int, limit: int) -> list[LogEntry]:
        if self._core is None or limit <= 0:
            return []
        start = max(start_index, self._core.log.first_index)
        return self._core.log.slice(start, start + limit)

    def refuse_leadership(self) -> None:
        """From now on this node never stands for election (it drains); it still votes,
        follows and replicates."""
        self._may_lead = False
        self._tell_core_who_may_lead()

    def _tell_core_who_may_lead(self) -> None:
        """This node stands for election unless it drains, or restores a leader's
        snapshot (its table is not yet the log's) until the restore is complete."""
        if self._core is not None:
            self._core.may_lead = self._may_lead and self._restoring is None

    def transfer_leadership(self, target_id: int = 0, exclude=frozenset()) -> defer.Deferred:
        """Hand leadership to `target_id` (0 = the best live peer not in `exclude`).

        Fires with (success, message, new_leader_id); success only once the target won.
        """
        core = self._core
        if not self._active or core.role != LEADER:
            return defer.succeed((False, "Not the leader", core.leader_id if core else 0))
        if target_id and target_id not in self.peers:
            return defer.succeed((False, f"Unknown target node {target_id}", 0))
        if self._transfer is not None:
            return defer.succeed((False, "A leadership transfer is already in progress", 0))
        target = target_id or self._best_transfer_target(exclude)
        if not target:
            return defer.succeed((False, "No peers available for transfer", 0))
        core.transfer_leadership(target, self._clock.seconds())
        self._transfer = d = defer.Deferred()
        self._step()
        return d

    def _best_transfer_target(self, exclude) -> int:
        now = self._clock.seconds()
        live = [
            (p.match_index, -peer)
            for peer, p in self._core.progress().items()
            if peer not in exclude
            and p.last_contact is not None
            and now - p.last_contact < self.timings.election_timeout_max
        ]
        return -max(live)[1] if live else 0

    def _finish_transfer(self, result) -> None:
        d, self._transfer = self._transfer, None
        if d is not None:
            d.callback(result)

    def _leader_hint(self) -> str | None:
        """The leader's address, for a leader this node has heard from within an
        election timeout (never a leader that is likely gone)."""
        core = self._core
        if core.role == LEADER or core.has_quorum(self._clock.seconds()):
            return self._address_of(core.leader_id)
        return None

    def _address_of(self, node_id: int) -> str | None:
        if node_id == self.node_id:
            return self.self_address
        return self.peers.get(node_id)

    # ------------------------------------------------------------------ the loop

    def _step(self, apply: bool = True) -> None:
        """Carry out everything the core has collected, then re-arm the timer. A long
        backlog of commits is applied one slice per reactor turn, so that peers and
        clients are answered in between; with `apply` False, from the next turn."""
        if self._processing:
            return
        self._processing = True
        try:
            while self._active:
                # Entries after a snapshot being restored wait until it is.
                ready = self._core.take_ready(apply and self._restoring is None)
                if ready is None:
                    break
                self._carry_out(ready)
                if ready.committed and self._active and self._core.commits_waiting:
                    self._resume_next_turn()
                    break
        finally:
            self._processing = False
        if self._active:
            if not apply and self._core.commits_waiting:
                self._resume_next_turn()
            self._schedule_timer()

    def _resume_next_turn(self) -> None:
        if self._resume_call is None or not self._resume_call.active():
            self._resume_call = self._clock.callLater(0, self._step)

    def _carry_out(self, ready: Ready) -> None:
        if ready.has_writes:
            self._write(ready)
            if not self._active:
                return
        for peer, request in ready.messages:
            if isinstance(request, _SEND_BEFORE_DURABLE):
                self._send(peer, request)
            else:
                self._when_durable().addCallback(
                    lambda _, p=peer, r=request: self._send(p, r)
                ).addErrback(lambda _: None)
        if ready.restore is not None:
            self._install(ready.restore)
        if ready.committed:
            self._apply(ready.committed)
        if ready.role_changed:
            if self._core.role != LEADER:
                self._fail_waiters(LeadershipLost)
            self._log_role_change()
            self._notify("role")
        if ready.transfer_result is not None:
            success, _message, new_leader = ready.transfer_result
            if success:
                log.info(
                    "Leadership transferred to node {target}", target=new_leader, node=self.node_id
                )
            self._finish_transfer(ready.transfer_result)

    def _install(self, snapshot: Snapshot) -> None:
        """Replace the state by a snapshot the leader sent, a slice a reactor turn
        (`_continue_restore`): meanwhile the table stays as it was, later entries wait
        to be applied and this node does not stand for election."""
        if self._restore_call is not None and self._restore_call.active():
            self._restore_call.cancel()  # a newer snapshot replaces one being restored
        self._restoring = _Restoring(
            snapshot, self._state_machine.begin_restore(snapshot.data), self._clock.seconds()
        )
        self._tell_core_who_may_lead()
        self._appended_at = {
            index: at for index, at in self._appended_at.items() if index > snapshot.index
        }
        self._continue_restore()

    def _continue_restore(self) -> None:
        """One slice of the restore; once complete, one info line says so (and how long
        it took), and the entries after it apply."""
        self._restore_call = None
        restoring = self._restoring
        if not self._active or restoring is None:
            return
        restoring.steps += 1
        try:
            complete = restoring.restore.step(RESTORE_STEP_RECORDS)
        except Exception:  # not a snapshot, or a bug: a node half restored must not go on
            self._halt("Restoring the leader's snapshot failed", Failure())
            return
        if not complete:
            self._restore_call = self._clock.callLater(0, self._continue_restore)
            return
        self._restoring = None
        self._tell_core_who_may_lead()
        # Only now: workers' heartbeats say what their node has applied, and the
        # leader reads a job missing from them as not running there (Dispatcher).
        self._last_applied = restoring.snapshot.index
        log.info(
            "Installed a snapshot from the leader: index {index}, {size} bytes,"
            " restored in {seconds:.2f}s, slices: {steps}",
            index=restoring.snapshot.index,
            size=len(restoring.snapshot.data),
            steps=restoring.steps,
            seconds=self._clock.seconds() - restoring.began,
            node=self.node_id,
        )
        self._notify("applied")
        if not self._processing:
            self._step()

    def _log_role_change(self) -> None:
        """One info line when an election starts, when this node wins one, and when it
        learns of a new leader (pre-votes stay quiet: they change nothing)."""
        core = self._core
        seen = (core.role, core.term, core.leader_id)
        if seen == self._seen_role:
            return
        self._seen_role = seen
        if core.role == CANDIDATE:
            self.metrics.elections.inc()
            log.info("Starting an election for term {term}", term=core.term, node=self.node_id)
        elif core.role == LEADER:
            log.info("Elected leader for term {term}", term=core.term, node=self.node_id)
        elif core.role == FOLLOWER and core.leader_id:
            log.info(
                "Following node {leader}, leader for term {term}",
                leader=core.leader_id,
                term=core.term,
                node=self.node_id,
            )

    def _write(self, ready: Ready) -> None:
        storage = self._storage
        seq = self._issued_seq = ready.seq
        writes = []
        if ready.hard_state is not None:
            writes.append(defer.maybeDeferred(storage.save_hard_state, *ready.hard_state))
        if ready.snapshot is not None:
            s = ready.snapshot
            save = storage.save_compaction if ready.own_compaction else storage.save_snapshot
            writes.append(defer.maybeDeferred(save, s.index, s.term, s.data))
        if ready.truncate_from is not None:
            writes.append(defer.maybeDeferred(storage.truncate, ready.truncate_from))
        if ready.entries:
            now = self._clock.seconds()
            appended_at = self._appended_at
            for entry in ready.entries:
                appended_at[entry.index] = now
            self.metrics.entries_appended.inc(len(ready.entries))
            writes.append(defer.maybeDeferred(storage.append, ready.entries))
        for d in writes[:-1]:
            d.addErrback(self._storage_failed)
        writes[-1].addCallbacks(lambda _: self._write_done(seq), self._storage_failed)

    def _write_done(self, seq: int) -> None:
        if not self._active:
            return
        self._durable_seq = seq
        self._core.persisted(seq)
        while self._after_durable and self._after_durable[0][0] <= seq:
            self._after_durable.popleft()[1].callback(None)
        self._step()

    def _when_durable(self) -> defer.Deferred:
        """A Deferred firing once every write issued so far is durable."""
        if self._durable_seq >= self._issued_seq:
            return defer.succeed(None)
        d = defer.Deferred()
        self._after_durable.append((self._issued_seq, d))
        return d

    def _storage_failed(self, failure) -> None:
        self._halt("Raft storage failed", failure)

    def _halt(self, what: str, failure: Failure) -> None:
        """Nothing more is acknowledged: fail the waiters, step down, stop serving,
        then report the failure (once) to whoever ends the process."""
        if self._failed:
            return
        message = failure.getErrorMessage()
        log.critical(
            "{what}, this node stops: {reason}", what=what, reason=message, node=self.node_id
        )
        self._failed = True
        self._stop_timers()
        self._fail_everything(StorageFailed)
        if self._core is not None:
            self._core.step_down(self._clock.seconds())
            self._core.take_ready()
        self._notify("role")
        if self._on_storage_failure is not None:
            self._on_storage_failure(message)

    def _send(self, peer: int, request) -> None:
        core = self._core
        d = defer.maybeDeferred(self._transport.send, peer, request)
        d.addCallbacks(
            self._on_response,
            self._on_send_error,
            callbackArgs=(core, peer, request, self._clock.seconds()),
            errbackArgs=(core, peer, request),
        )

    def _on_response(self, response, core: RaftCore, peer: int, request, sent_at: float) -> None:
        if self._active and self._core is core:
            if (
                isinstance(request, (AppendEntriesRequest, InstallSnapshotRequest))
                and request.term == response.term == core.term
            ):
                acknowledged = (request.term, sent_at)
                self._acknowledged[peer] = max(
                    acknowledged, self._acknowledged.get(peer, acknowledged)
                )
            core.receive_response(peer, request, response, self._clock.seconds())
            if self._pending_compaction is not None:
                self._maybe_compact()
            self._step()

    def _on_send_error(self, failure, core: RaftCore, peer: int, request) -> None:
        log.debug(
            "Raft {request} to node {peer} lost: {error}",
            request=type(request).__name__,
            peer=peer,
            error=failure.value,
        )
        self.metrics.raft_send_failures.labels(str(peer)).inc()
        if self._active and self._core is core:
            core.send_failed(peer, request, self._clock.seconds())
            self._step()

    def _apply(self, entries: list[LogEntry]) -> None:
        apply = self._state_machine.apply
        now = self._clock.seconds()
        reached = [self._appended_at.pop(entry.index, None) for entry in entries]
        reached = [at for at in reached if at is not None]
        if reached:  # once per batch applied together: its longest wait
            self.metrics.apply_lag_seconds.observe(now - min(reached))
        for entry in entries:
            waiter = self._waiters.pop(entry.index, None)
            result = None
            error: Exception | None = None
            if not entry.is_noop:
                try:
                    result = apply(entry.index, entry.command)
                except Exception as e:  # a bug in apply: report it, keep the log moving
                    log.failure("Applying entry {index} failed", index=entry.index)
                    error = e
            self._last_applied = entry.index
            if waiter is not None:
                self.metrics.commit_seconds.observe(now - waiter.proposed_at)
                if waiter.term != entry.term:
                    waiter.deferred.errback(LeadershipLost())
                elif error is not None:
                    waiter.deferred.errback(error)
                else:
                    waiter.deferred.callback(result)
        self.metrics.entries_applied.inc(len(entries))
        core = self._core
        core.applied_to(self._last_applied)
        self._maybe_compact()
        self._notify("applied")

    def _maybe_compact(self) -> None:
        """Compact the log once it is due, at a snapshot begun then.

        The snapshot is built a slice at a time (`_continue_snapshot`). Every node then
        waits until every live follower has that snapshot's index (the leader's view,
        which followers hear from it): a follower whose next entries were compacted
        away needs the whole snapshot, which stalls both ends for as long as the table
        is large, whether the present leader or the next one sends it. Followers silent
        for COMPACTION_PATIENCE_SECONDS do not count, and a backlog of
        COMPACTION_BACKLOG_THRESHOLDS thresholds compacts regardless.
        """
        core = self._core
        pending = self._pending_compaction
        if pending is None or pending[0] <= core.log.snapshot_index:
            self._pending_compaction = None
            if self._snapshot_build is None and core.compaction_due():
                self._snapshot_build = (
                    core.applied_index,
                    self._state_machine.begin_snapshot(),
                    self._clock.seconds(),
                )
                self._continue_snapshot()
            return
        index = pending[0]
        if (
            0 < core.retain_from() <= index
            and core.applied_index - core.log.snapshot_index
            <= COMPACTION_BACKLOG_THRESHOLDS * self.limits.compaction_threshold
        ):
            return
        self._pending_compaction = None
        core.compact(index, pending[1])

    def _continue_snapshot(self) -> None:
        """One slice of the snapshot being built; the next at a later reactor turn, or
        the compaction once it is complete."""
        self._snapshot_call = None
        index, build, began = self._snapshot_build
        if not self._active or index <= self._core.log.snapshot_index:
            self._snapshot_build = None  # stopped, or a snapshot installed meanwhile
            return
        data = build.step(SNAPSHOT_STEP_RECORDS)
        if data is None:
            self._snapshot_call = self._clock.callLater(0, self._continue_snapshot)
            return
        self._snapshot_build = None
        self.metrics.snapshot_seconds.observe(self._clock.seconds() - began)
        self._pending_compaction = (index, data)
        self._maybe_compact()

    def _fail_waiters(self, error_type) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.deferred.errback(error_type())

    def _notify(self, event: str) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.failure("Raft observer failed on {event}", event=event)

    # ------------------------------------------------------------------ timers

    def _schedule_timer(self) -> None:
        due = self._core.next_deadline()
        if due >= self._timer_due or due == math.inf:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        due, self._timer, self._timer_due = self._timer_due, None, math.inf
        if not self._active:
            return
        # callLater(due - now) may land a float rounding short of `due`.
        now = max(self._clock.seconds(), due)
        self._core.timer_late(now - due, now)
        self._core.tick(now)
        self._step()

    def _schedule_expiry(self) -> None:
        first = next(iter(self._waiters.values()), None)
        if first is None:
            self._expiry_call = None
            return
        delay = max(0.0, first.deadline - self._clock.seconds())
        self._expiry_call = self._clock.callLater(delay, self._expire_waiters)

    def _expire_waiters(self) -> None:
        now = self._clock.seconds()
        while self._waiters:
            index, waiter = next(iter(self._waiters.items()))
            if waiter.deadline > now:
                break
            del self._waiters[index]
            waiter.deferred.errback(CommitTimeout())
        self._schedule_expiry()


def propose_each(raft: IRaftService, commands: list[bytes]) -> defer.Deferred:
    """Propose `commands` as entries of their own, in order: a Deferred of their
    results in that order, or of the first failure."""
    proposals = [raft.propose(command) for command in commands]
    return defer.gatherResults(proposals, consumeErrors=True).addErrback(_first_failure)


def _first_failure(failure):
    failure.trap(defer.FirstError)
    return failure.value.subFailure
