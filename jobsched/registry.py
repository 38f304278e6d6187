"""WorkerRegistry: what the leader last heard from each remote worker.

Heartbeats land here (through the Dispatcher); placement reads liveness, capacity and
draining from here, and the cluster view reads which peers drain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from jobsched.scheduler import WorkerView


@dataclass(frozen=True)
class Heartbeat:
    """The latest word from a remote worker, as the leader received it."""

    received_at: float
    running_job_ids: tuple[str, ...]
    free_slots: int
    draining: bool
    incarnation: int
    applied_index: int = 0  # the worker's node had applied the log this far (0: unknown)
    entry_forms: int = 0  # the newest entry forms its node applies (0: from before forms)


class WorkerRegistry:
    """Remote workers' latest heartbeats; live while heard from within `expiry`."""

    def __init__(self, clock: IReactorTime, expiry: float, peers: Iterable[int] = ()) -> None:
        self._clock = clock
        self._expiry = expiry
        self._peers = tuple(peers)
        self._heartbeats: dict[int, Heartbeat] = {}

    def record(
        self,
        node_id: int,
        running_job_ids,
        free_slots: int,
        draining: bool,
        incarnation: int,
        applied_index: int = 0,
        entry_forms: int = 0,
    ) -> bool:
        """Keep a heartbeat; returns whether the worker was live before it."""
        was_live = self.is_live(node_id)
        self._heartbeats[node_id] = Heartbeat(
            self._clock.seconds(),
            tuple(running_job_ids),
            free_slots,
            draining,
            incarnation,
            applied_index,
            entry_forms,
        )
        return was_live

    def entry_forms(self, node_id: int) -> int:
        """The entry forms the node's latest heartbeat named (0: none heard, or a
        version from before forms were counted)."""
        beat = self._heartbeats.get(node_id)
        return beat.entry_forms if beat is not None else 0

    def every_node_applies(self, forms: int) -> bool:
        """Whether every peer's latest heartbeat (since `forget_all`) says its node
        applies entries of `forms`; a peer not heard from might not."""
        beats = self._heartbeats
        return all(peer in beats and beats[peer].entry_forms >= forms for peer in self._peers)

    def latest(self, node_id: int) -> Heartbeat | None:
        return self._heartbeats.get(node_id)

    def is_live(self, node_id: int) -> bool:
        beat = self._heartbeats.get(node_id)
        return bool(beat and self._clock.seconds() - beat.received_at <= self._expiry)

    def is_draining(self, node_id: int) -> bool:
        beat = self._heartbeats.get(node_id)
        return bool(beat and beat.draining)

    def views(self, slot_changes: Mapping[int, int] | None = None) -> dict[int, WorkerView]:
        """{worker id: WorkerView} of every remote worker heard from; `slot_changes`
        (worker id -> slots) is added to the slots they reported."""
        changes = slot_changes or {}
        return {
            node_id: WorkerView(
                live=self.is_live(node_id),
                draining=beat.draining,
                slots=beat.free_slots + len(beat.running_job_ids) + changes.get(node_id, 0),
                incarnation=beat.incarnation,
            )
            for node_id, beat in self._heartbeats.items()
        }

    def excuse(self, seconds: float) -> None:
        """This leader did not run for `seconds` (paused, or its reactor stalled), so it
        could not hear anyone: count every heartbeat as that much later, at most now."""
        now = self._clock.seconds()
        self._heartbeats = {
            node_id: dataclasses.replace(beat, received_at=min(now, beat.received_at + seconds))
            for node_id, beat in self._heartbeats.items()
        }

    def forget_all(self) -> None:
        """This node stopped leading: what it heard no longer tells anything."""
        self._heartbeats.clear()
