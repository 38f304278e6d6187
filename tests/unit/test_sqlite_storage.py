"""SqliteStorage beyond the shared contract: group commit, durability settings,
checksums and damaged files, and what a failed write does."""

from __future__ import annotations

import os
import re
import sqlite3
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, task

from jobsched.raft.sqlite_storage import DATA_FILE_NAME, SqliteStorage, StorageError
from jobsched.raft.storage import StoredState
from tests.unit.test_storage_contract import entries, entry


def the_reactor():
    from twisted.internet import reactor

    return reactor


class ControlledConnection(sqlite3.Connection):
    """A real connection whose COMMIT can be held at a gate or made to fail (a disk
    that stalls or reports an I/O error)."""

    gate: threading.Event | None = None
    fail_commits = False

    def execute(self, sql, *args):
        if sql == "COMMIT":
            if self.gate is not None:
                self.gate.wait(10)
            if self.fail_commits:
                raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


class ControlledConnector:
    """A `connect` for SqliteStorage that keeps the ControlledConnection it made."""

    connection: ControlledConnection | None = None

    def __call__(self, *args, **kwargs) -> ControlledConnection:
        self.connection = sqlite3.connect(*args, factory=ControlledConnection, **kwargs)
        return self.connection


@pytest.fixture
def data_file(tmp_path) -> str:
    return str(tmp_path / DATA_FILE_NAME)


@pytest.fixture
def opened(tmp_path):
    """open(node_id=1, **kwargs) -> (store, state) on tmp_path; stores still open are
    closed at the end."""
    stores: list[SqliteStorage] = []

    def open_store(node_id: int = 1, **kwargs) -> tuple[SqliteStorage, StoredState]:
        store = SqliteStorage(str(tmp_path), node_id, the_reactor(), **kwargs)
        state = store.load()
        stores.append(store)
        return store, state

    yield open_store
    for store in stores:
        pytest_twisted.blockon(store.close())


def execute(path: str, sql: str, *params) -> list:
    """Run one statement on the file through a connection of its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@defer.inlineCallbacks
def write_entries(opened, last: int):
    store, _ = opened()
    yield store.append(entries(1, last))
    yield store.close()


def load_error(path: str, node_id: int = 1) -> str:
    """The message of the StorageError loading `path` raises; it must be one line."""
    with pytest.raises(StorageError) as caught:
        SqliteStorage(path, node_id, the_reactor()).load()
    message = str(caught.value)
    assert "\n" not in message
    return message


def next_turn() -> defer.Deferred:
    return task.deferLater(the_reactor(), 0, lambda: None)


# ---------------------------------------------------------------------- group commit


@pytest_twisted.inlineCallbacks
def test_writes_of_one_reactor_turn_share_one_commit(opened):
    store, _ = opened()
    yield defer.gatherResults([store.append([entry(i)]) for i in range(1, 201)])
    assert store.entries_written == 200
    assert store.commit_count <= 3


@pytest_twisted.inlineCallbacks
def test_writes_queued_while_a_commit_is_in_flight_share_the_next(opened):
    connector = ControlledConnector()
    store, _ = opened(connect=connector)
    connector.connection.gate = gate = threading.Event()
    writes = [store.append([entry(1)])]
    for turn in range(5):
        yield next_turn()
        writes += [store.append([entry(i)]) for i in range(2 + 10 * turn, 12 + 10 * turn)]
    assert not any(d.called for d in writes)
    gate.set()
    yield defer.gatherResults(writes)
    assert (store.commit_count, store.entries_written) == (2, 51)


@pytest_twisted.inlineCallbacks
def test_a_write_fires_only_once_committed(opened, data_file):
    store, _ = opened()
    d = store.append(entries(1, 3))
    assert not d.called
    yield d
    assert execute(data_file, "SELECT count(*) FROM entries") == [(3,)]


# ---------------------------------------------------------------------- a failing disk


@pytest_twisted.inlineCallbacks
def test_a_failed_commit_fails_its_writes_and_every_later_one(opened, data_file):
    connector = ControlledConnector()
    store, _ = opened(connect=connector)
    yield store.append([entry(1)])
    connector.connection.fail_commits = True
    in_failed_commit = [store.append([entry(2)]), store.save_hard_state(1, 1)]
    for d in in_failed_commit:
        with pytest.raises(StorageError, match="^" + re.escape(f"{data_file}: write failed")):
            yield d
    connector.connection.fail_commits = False
    with pytest.raises(StorageError):
        yield store.append([entry(2)])
    assert store.commit_count == 1
    yield store.close()
    _, state = opened()
    assert state == StoredState(entries=[entry(1)])


@pytest_twisted.inlineCallbacks
def test_writes_after_close_fail(opened):
    store, _ = opened()
    yield store.close()
    yield store.close()
    with pytest.raises(StorageError):
        yield store.save_hard_state(1, 1)


# ---------------------------------------------------------------------- settings


def test_wal_mode_and_synchronous_full_are_set(opened):
    connector = ControlledConnector()
    opened(connect=connector)
    conn = connector.connection
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


@pytest_twisted.inlineCallbacks
def test_the_path_may_name_the_file_itself(tmp_path):
    path = str(tmp_path / "elsewhere.db")
    store = SqliteStorage(path, 1, the_reactor())
    assert store.load() == StoredState()
    yield store.close()
    assert execute(path, "SELECT value FROM meta WHERE key = 'node_id'") == [("1",)]


# ---------------------------------------------------------------------- damage


def corrupt_entry(path: str, index: int) -> None:
    execute(path, "UPDATE entries SET crc = crc + 1 WHERE idx = ?", index)


@pytest.mark.parametrize("torn", [[5], [4, 5]], ids=["last", "last-two"])
@pytest_twisted.inlineCallbacks
def test_a_torn_tail_is_truncated_on_load(opened, data_file, torn):
    yield write_entries(opened, 5)
    for index in torn:
        corrupt_entry(data_file, index)
    _, state = opened()
    assert state.entries == entries(1, 5 - len(torn))
    assert execute(data_file, "SELECT max(idx) FROM entries") == [(5 - len(torn),)]


@pytest_twisted.inlineCallbacks
def test_a_corrupt_entry_before_valid_ones_stops_the_load(opened, data_file):
    yield write_entries(opened, 5)
    corrupt_entry(data_file, 3)
    assert load_error(data_file) == (
        f"{data_file}: corrupt log entry 3 (checksum mismatch) before valid entries"
    )


@pytest_twisted.inlineCallbacks
def test_a_missing_entry_stops_the_load(opened, data_file):
    yield write_entries(opened, 5)
    execute(data_file, "DELETE FROM entries WHERE idx = 3")
    assert load_error(data_file) == f"{data_file}: log entry 3 is missing (found 4)"


@pytest_twisted.inlineCallbacks
def test_a_corrupt_hard_state_stops_the_load(opened, data_file):
    store, _ = opened()
    yield store.save_hard_state(3, 1)
    yield store.close()
    execute(data_file, "UPDATE hard_state SET voted_for = 2")
    assert load_error(data_file) == f"{data_file}: corrupt hard state (checksum mismatch)"


@pytest_twisted.inlineCallbacks
def test_a_corrupt_snapshot_stops_the_load(opened, data_file):
    store, _ = opened()
    yield store.save_snapshot(4, 1, b"state")
    yield store.close()
    execute(data_file, "UPDATE snapshot SET data = x'00'")
    assert load_error(data_file) == (
        f"{data_file}: corrupt snapshot at index 4 (checksum mismatch)"
    )


def test_a_file_of_random_bytes_is_refused(data_file):
    with open(data_file, "wb") as f:
        f.write(os.urandom(8192))
    assert load_error(data_file) == (
        f"{data_file}: not a jobsched data file (file is not a database)"
    )


@pytest_twisted.inlineCallbacks
def test_a_damaged_sqlite_file_is_refused(opened, data_file):
    yield write_entries(opened, 200)
    (root,) = execute(data_file, "SELECT rootpage FROM sqlite_master WHERE name = 'entries'")[0]
    (page_size,) = execute(data_file, "PRAGMA page_size")[0]
    with open(data_file, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(os.urandom(page_size))
    message = load_error(data_file)
    assert message.startswith(f"{data_file}: damaged database (")


def test_another_programs_sqlite_file_is_refused(data_file):
    execute(data_file, "CREATE TABLE accounts (id INTEGER)")
    assert load_error(data_file) == f"{data_file}: not a jobsched data file (no meta table)"


@pytest_twisted.inlineCallbacks
def test_another_nodes_data_is_refused(opened, data_file):
    store, _ = opened(node_id=2)
    yield store.close()
    assert load_error(data_file, node_id=1) == f"{data_file}: belongs to node 2, not node 1"
