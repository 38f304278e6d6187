"""The IRaftStorage contract, run against every provider: MemoryStorage and SqliteStorage
(with its writer process, and with a writer thread).

StorageContract holds the cases; each provider's TestCase says how to open a store. A
"restart" closes the store and loads it again: the same object for memory, a new
SqliteStorage on the same file for SQLite. The real reactor runs (SQLite's writer
reports back through it); the store still open at the end is closed in cleanup, which
stops its writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.interfaces import IRaftStorage
from jobsched.raft.messages import LogEntry
from jobsched.raft.sqlite_storage import SqliteStorage
from jobsched.raft.storage import MemoryStorage, Snapshot, StoredState

NODE_ID = 1


def entry(index: int, term: int = 1) -> LogEntry:
    return LogEntry(term, index, f"entry {index} of term {term}".encode())


def entries(first: int, last: int, term: int = 1) -> list[LogEntry]:
    return [entry(i, term) for i in range(first, last + 1)]


def hard_state(state: StoredState) -> tuple[int, int]:
    return state.term, state.voted_for


class StorageContract:
    """The contract's cases, mixed into one TestCase per provider.

    A provider implements `open_store()`, which returns the store a (re)start loads.
    """

    def open_store(self):
        raise NotImplementedError

    def setUp(self) -> None:
        super().setUp()
        self.current = None
        self.addCleanup(self.close_current)

    def close_current(self) -> defer.Deferred | None:
        if self.current is None:
            return None
        return self.current.close()

    async def start(self):
        """Open and load a store; (store, StoredState)."""
        store = self.open_store()
        state = await defer.maybeDeferred(store.load)
        self.current = store
        return store, state

    async def restart(self):
        """Close the current store (flushing it) and load again."""
        await self.current.close()
        return await self.start()

    async def test_provides_the_interface(self):
        store, _ = await self.start()
        self.assertTrue(verifyObject(IRaftStorage, store))

    async def test_a_fresh_store_is_empty(self):
        _, state = await self.start()
        self.assertEqual(state, StoredState())

    async def test_the_latest_hard_state_is_reloaded(self):
        store, _ = await self.start()
        await store.save_hard_state(5, 0)
        await store.save_hard_state(6, 3)
        _, state = await self.restart()
        self.assertEqual(hard_state(state), (6, 3))

    async def test_a_vote_survives_restart(self):
        store, _ = await self.start()
        await store.save_hard_state(2, 3)
        _, state = await self.restart()
        self.assertEqual(hard_state(state), (2, 3))
        store, state = await self.restart()
        self.assertEqual(hard_state(state), (2, 3))

    async def test_log_entries_reload_in_order(self):
        store, _ = await self.start()
        await store.append(entries(1, 3))
        await store.append(entries(4, 5, term=2))
        _, state = await self.restart()
        self.assertEqual(state.entries, entries(1, 3) + entries(4, 5, term=2))
        self.assertIsNone(state.snapshot)

    async def test_an_empty_append_changes_nothing(self):
        store, _ = await self.start()
        await store.append(entries(1, 2))
        await store.append([])
        _, state = await self.restart()
        self.assertEqual(state.entries, entries(1, 2))

    async def test_append_replaces_a_conflicting_suffix(self):
        store, _ = await self.start()
        await store.append(entries(1, 5))
        await store.append([entry(4, term=2)])
        _, state = await self.restart()
        self.assertEqual(state.entries, [*entries(1, 3), entry(4, term=2)])

    async def test_a_suffix_replaced_after_a_restart(self):
        store, _ = await self.start()
        await store.append(entries(1, 5))
        store, _ = await self.restart()
        await store.append([entry(4, term=2)])
        _, state = await self.restart()
        self.assertEqual(state.entries, [*entries(1, 3), entry(4, term=2)])

    async def test_writes_of_one_turn_build_on_each_other(self):
        store, _ = await self.start()
        await defer.gatherResults(
            [
                store.append(entries(1, 5)),
                store.append([entry(3, term=2)]),
                store.append([entry(4, term=2)]),
                store.truncate(4),
                store.append(entries(4, 6, term=3)),
                store.save_snapshot(2, 1, b"two"),
            ]
        )
        _, state = await self.restart()
        self.assertEqual(state.snapshot, Snapshot(2, 1, b"two"))
        self.assertEqual(state.entries, [entry(3, term=2), *entries(4, 6, term=3)])

    async def test_thousands_of_entries_in_one_append(self):
        store, _ = await self.start()
        await store.append(entries(1, 2500))
        await store.append(entries(2501, 2502))
        _, state = await self.restart()
        self.assertEqual(state.entries, entries(1, 2502))

    async def test_truncate_deletes_from_an_index(self):
        store, _ = await self.start()
        await store.append(entries(1, 5))
        await store.truncate(3)
        _, state = await self.restart()
        self.assertEqual(state.entries, entries(1, 2))

    async def test_a_snapshot_drops_the_prefix_it_covers(self):
        store, _ = await self.start()
        await store.append(entries(1, 10))
        await store.save_snapshot(6, 1, b"state up to 6")
        _, state = await self.restart()
        self.assertEqual(state.snapshot, Snapshot(6, 1, b"state up to 6"))
        self.assertEqual(state.entries, entries(7, 10))

    async def test_the_log_continues_after_compaction_and_restart(self):
        store, _ = await self.start()
        await store.save_hard_state(1, 1)
        await store.append(entries(1, 10))
        await store.save_snapshot(6, 1, b"six")
        store, _ = await self.restart()
        await store.append(entries(11, 12, term=2))
        await store.save_snapshot(8, 1, b"eight")
        _, state = await self.restart()
        self.assertEqual(hard_state(state), (1, 1))
        self.assertEqual(state.snapshot, Snapshot(8, 1, b"eight"))
        self.assertEqual(state.entries, entries(9, 10) + entries(11, 12, term=2))

    async def test_an_installed_snapshot_beyond_the_log_then_new_entries(self):
        store, _ = await self.start()
        await store.append(entries(1, 5))
        await store.save_snapshot(20, 3, b"leader's state")
        await store.truncate(21)
        await store.append(entries(21, 22, term=3))
        _, state = await self.restart()
        self.assertEqual(state.snapshot, Snapshot(20, 3, b"leader's state"))
        self.assertEqual(state.entries, entries(21, 22, term=3))

    async def test_entries_after_an_installed_snapshot_in_the_same_turn(self):
        store, _ = await self.start()
        await store.append(entries(1, 5))
        await defer.gatherResults(
            [store.save_snapshot(20, 3, b"leader's state"), store.append(entries(21, 22, term=3))]
        )
        _, state = await self.restart()
        self.assertEqual(state.snapshot, Snapshot(20, 3, b"leader's state"))
        self.assertEqual(state.entries, entries(21, 22, term=3))

    def assert_rebuilds(self, state: StoredState, snapshots: dict, last: int) -> None:
        """`state` holds one of `snapshots` (index -> data; 0: none) and every entry
        after it up to `last`: the same log, whichever the store kept."""
        index = state.snapshot.index if state.snapshot else 0
        self.assertIn(index, snapshots)
        if index:
            self.assertEqual(state.snapshot, Snapshot(index, 1, snapshots[index]))
        self.assertEqual(state.entries, entries(index + 1, last))

    async def test_a_compaction_reloads_as_the_same_log(self):
        store, _ = await self.start()
        await store.append(entries(1, 10))
        await store.save_compaction(6, 1, b"six")
        store, state = await self.restart()
        self.assert_rebuilds(state, {0: None, 6: b"six"}, 10)
        await store.append(entries(11, 12))
        await store.save_compaction(11, 1, b"eleven")
        _, state = await self.restart()
        self.assert_rebuilds(state, {0: None, 6: b"six", 11: b"eleven"}, 12)

    async def test_a_compaction_past_the_stored_log_is_written(self):
        """A compaction covering entries the store was never given (written nowhere
        else) is written as a snapshot."""
        store, _ = await self.start()
        await store.append(entries(1, 3))
        await store.save_compaction(5, 1, b"five")
        await store.append(entries(6, 7))
        _, state = await self.restart()
        self.assertEqual(state.snapshot, Snapshot(5, 1, b"five"))
        self.assertEqual(state.entries, entries(6, 7))

    async def test_writes_complete_in_call_order(self):
        store, _ = await self.start()
        done: list[int] = []
        writes = [
            store.save_hard_state(1, 1),
            store.append(entries(1, 3)),
            store.save_hard_state(2, 0),
            store.append(entries(3, 4, term=2)),
            store.truncate(4),
            store.save_snapshot(2, 1, b"two"),
            store.append([entry(4, term=2)]),
            store.save_compaction(3, 2, b"three"),
        ]
        for n, d in enumerate(writes):
            d.addCallback(lambda _, n=n: done.append(n))
        await defer.gatherResults(writes)
        self.assertEqual(done, list(range(len(writes))))
        _, state = await self.restart()
        self.assertEqual(hard_state(state), (2, 0))
        if state.snapshot.index == 2:  # the compaction kept its entries
            self.assertEqual(state.snapshot, Snapshot(2, 1, b"two"))
            self.assertEqual(state.entries, [entry(3, term=2), entry(4, term=2)])
        else:
            self.assertEqual(state.snapshot, Snapshot(3, 2, b"three"))
            self.assertEqual(state.entries, [entry(4, term=2)])

    async def test_close_flushes_writes_not_yet_waited_for(self):
        store, _ = await self.start()
        store.save_hard_state(4, 2)
        store.append(entries(1, 3))
        _, state = await self.restart()
        self.assertEqual(hard_state(state), (4, 2))
        self.assertEqual(state.entries, entries(1, 3))


class MemoryStorageContractTests(StorageContract, unittest.TestCase):
    """The contract for MemoryStorage: a restart reloads the same object."""

    def setUp(self) -> None:
        super().setUp()
        self.storage = MemoryStorage()

    def open_store(self) -> MemoryStorage:
        return self.storage


class SqliteStorageContractTests(StorageContract, unittest.TestCase):
    """The contract for SqliteStorage: a restart opens a new store on the same directory.
    The store writes from a process of its own."""

    connect = None

    def setUp(self) -> None:
        super().setUp()
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir(parents=True)

    def open_store(self) -> SqliteStorage:
        from twisted.internet import reactor

        return SqliteStorage(str(self.data_dir), NODE_ID, reactor, connect=self.connect)


class SqliteStorageInProcessContractTests(SqliteStorageContractTests):
    """The contract for SqliteStorage writing from a thread of this process (as the
    tests that make its connection stall or fail have it)."""

    connect = staticmethod(sqlite3.connect)
