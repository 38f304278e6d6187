"""The IRaftStorage contract, run against every provider: MemoryStorage and SqliteStorage.

A "restart" closes the store and loads it again: the same object for memory, a new
SqliteStorage on the same file for SQLite. The real reactor runs (SQLite's writer
thread reports back through it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2
from jobsched.interfaces import IRaftStorage
from jobsched.raft.messages import LogEntry
from jobsched.raft.sqlite_storage import SqliteStorage
from jobsched.raft.storage import MemoryStorage, Snapshot, StoredState

NODE_ID = 1


def entry(index: int, term: int = 1) -> LogEntry:
    worker = scheduler_pb2.RegisterWorkerCommand(worker_id=index * 10 + term)
    return LogEntry(term, index, scheduler_pb2.Command(register_worker=worker))


def entries(first: int, last: int, term: int = 1) -> list[LogEntry]:
    return [entry(i, term) for i in range(first, last + 1)]


class MemoryProvider:
    """Restarting reloads the same MemoryStorage object."""

    def __init__(self, tmp_path) -> None:
        self._storage = MemoryStorage()

    def open(self) -> MemoryStorage:
        return self._storage


class SqliteProvider:
    """Restarting opens a new SqliteStorage on the same data directory."""

    def __init__(self, tmp_path) -> None:
        self._dir = str(tmp_path)

    def open(self) -> SqliteStorage:
        from twisted.internet import reactor

        return SqliteStorage(self._dir, NODE_ID, reactor)


class Stores:
    """Starts and restarts stores of one provider; closes the last one at the end."""

    def __init__(self, provider) -> None:
        self._provider = provider
        self.current = None

    @defer.inlineCallbacks
    def start(self):
        """Open and load a store; Deferred[(store, StoredState)]."""
        store = self._provider.open()
        state = yield defer.maybeDeferred(store.load)
        self.current = store
        return store, state

    @defer.inlineCallbacks
    def restart(self):
        """Close the current store (flushing it) and load again."""
        yield self.current.close()
        result = yield self.start()
        return result


@pytest.fixture(params=[MemoryProvider, SqliteProvider], ids=["memory", "sqlite"])
def stores(request, tmp_path) -> Iterator[Stores]:
    handle = Stores(request.param(tmp_path))
    yield handle
    if handle.current is not None:
        pytest_twisted.blockon(handle.current.close())


def hard_state(state: StoredState) -> tuple[int, int]:
    return state.term, state.voted_for


@pytest_twisted.inlineCallbacks
def test_provides_the_interface(stores):
    store, _ = yield stores.start()
    assert verifyObject(IRaftStorage, store)


@pytest_twisted.inlineCallbacks
def test_a_fresh_store_is_empty(stores):
    _, state = yield stores.start()
    assert state == StoredState()


@pytest_twisted.inlineCallbacks
def test_the_latest_hard_state_is_reloaded(stores):
    store, _ = yield stores.start()
    yield store.save_hard_state(5, 0)
    yield store.save_hard_state(6, 3)
    _, state = yield stores.restart()
    assert hard_state(state) == (6, 3)


@pytest_twisted.inlineCallbacks
def test_a_vote_survives_restart(stores):
    store, _ = yield stores.start()
    yield store.save_hard_state(2, 3)
    _, state = yield stores.restart()
    assert hard_state(state) == (2, 3)
    store, state = yield stores.restart()
    assert hard_state(state) == (2, 3)


@pytest_twisted.inlineCallbacks
def test_log_entries_reload_in_order(stores):
    store, _ = yield stores.start()
    yield store.append(entries(1, 3))
    yield store.append(entries(4, 5, term=2))
    _, state = yield stores.restart()
    assert state.entries == entries(1, 3) + entries(4, 5, term=2)
    assert state.snapshot is None


@pytest_twisted.inlineCallbacks
def test_an_empty_append_changes_nothing(stores):
    store, _ = yield stores.start()
    yield store.append(entries(1, 2))
    yield store.append([])
    _, state = yield stores.restart()
    assert state.entries == entries(1, 2)


@pytest_twisted.inlineCallbacks
def test_append_replaces_a_conflicting_suffix(stores):
    store, _ = yield stores.start()
    yield store.append(entries(1, 5))
    yield store.append([entry(4, term=2)])
    _, state = yield stores.restart()
    assert state.entries == [*entries(1, 3), entry(4, term=2)]


@pytest_twisted.inlineCallbacks
def test_truncate_deletes_from_an_index(stores):
    store, _ = yield stores.start()
    yield store.append(entries(1, 5))
    yield store.truncate(3)
    _, state = yield stores.restart()
    assert state.entries == entries(1, 2)


@pytest_twisted.inlineCallbacks
def test_a_snapshot_drops_the_prefix_it_covers(stores):
    store, _ = yield stores.start()
    yield store.append(entries(1, 10))
    yield store.save_snapshot(6, 1, b"state up to 6")
    _, state = yield stores.restart()
    assert state.snapshot == Snapshot(6, 1, b"state up to 6")
    assert state.entries == entries(7, 10)


@pytest_twisted.inlineCallbacks
def test_the_log_continues_after_compaction_and_restart(stores):
    store, _ = yield stores.start()
    yield store.save_hard_state(1, 1)
    yield store.append(entries(1, 10))
    yield store.save_snapshot(6, 1, b"six")
    store, _ = yield stores.restart()
    yield store.append(entries(11, 12, term=2))
    yield store.save_snapshot(8, 1, b"eight")
    _, state = yield stores.restart()
    assert hard_state(state) == (1, 1)
    assert state.snapshot == Snapshot(8, 1, b"eight")
    assert state.entries == entries(9, 10) + entries(11, 12, term=2)


@pytest_twisted.inlineCallbacks
def test_an_installed_snapshot_beyond_the_log_then_new_entries(stores):
    store, _ = yield stores.start()
    yield store.append(entries(1, 5))
    yield store.save_snapshot(20, 3, b"leader's state")
    yield store.truncate(21)
    yield store.append(entries(21, 22, term=3))
    _, state = yield stores.restart()
    assert state.snapshot == Snapshot(20, 3, b"leader's state")
    assert state.entries == entries(21, 22, term=3)


@pytest_twisted.inlineCallbacks
def test_writes_complete_in_call_order(stores):
    store, _ = yield stores.start()
    done: list[int] = []
    writes = [
        store.save_hard_state(1, 1),
        store.append(entries(1, 3)),
        store.save_hard_state(2, 0),
        store.append(entries(3, 4, term=2)),
        store.truncate(4),
        store.save_snapshot(2, 1, b"two"),
        store.append([entry(4, term=2)]),
    ]
    for n, d in enumerate(writes):
        d.addCallback(lambda _, n=n: done.append(n))
    yield defer.gatherResults(writes)
    assert done == list(range(len(writes)))
    _, state = yield stores.restart()
    assert hard_state(state) == (2, 0)
    assert state.snapshot == Snapshot(2, 1, b"two")
    assert state.entries == [entry(3, term=2), entry(4, term=2)]


@pytest_twisted.inlineCallbacks
def test_close_flushes_writes_not_yet_waited_for(stores):
    store, _ = yield stores.start()
    store.save_hard_state(4, 2)
    store.append(entries(1, 3))
    _, state = yield stores.restart()
    assert hard_state(state) == (4, 2)
    assert state.entries == entries(1, 3)
