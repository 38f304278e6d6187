"""SqliteStorage beyond the shared contract: group commit, durability settings,
checksums and damaged files, what a failed write does, the writer process and the lock."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import threading
from pathlib import Path

from twisted.internet import defer, task
from twisted.trial import unittest

from jobsched.raft import sqlite_storage
from jobsched.raft.sqlite_storage import (
    DATA_FILE_NAME,
    PROBE_FILE_NAME,
    SqliteStorage,
    StorageError,
    WriterThread,
)
from jobsched.raft.storage import StoredState
from tests.nodeproc import storage_writers
from tests.unit.test_storage_contract import entries, entry


def the_reactor():
    from twisted.internet import reactor

    return reactor


DISK_IO_ERROR = ("SQLITE_IOERR_WRITE", "disk I/O error")
DISK_FULL = ("SQLITE_FULL", "database or disk is full")


def sqlite_error(name: str, message: str) -> sqlite3.OperationalError:
    """The error SQLite raises with result code `name`."""
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = name
    return error


class ControlledConnection(sqlite3.Connection):
    """A real connection whose commits can be held at a gate or made to fail (a disk
    that stalls, or SQLite's code and message of a failing disk in `fail_commits`): a
    COMMIT, and an INSERT of log entries, which commits by itself when it is alone."""

    gate: threading.Event | None = None
    fail_commits: tuple[str, str] | None = None

    def execute(self, sql, *args):
        if sql == "COMMIT" or sql.startswith("INSERT INTO entries"):
            if self.gate is not None:
                self.gate.wait(10)
            if self.fail_commits:
                raise sqlite_error(*self.fail_commits)
        return super().execute(sql, *args)


class ControlledConnector:
    """A `connect` for SqliteStorage that keeps the ControlledConnection it made."""

    connection: ControlledConnection | None = None

    def __call__(self, *args, **kwargs) -> ControlledConnection:
        self.connection = sqlite3.connect(*args, factory=ControlledConnection, **kwargs)
        return self.connection


def execute(path: str, sql: str, *params) -> list:
    """Run one statement on the file through a connection of its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def next_turn() -> defer.Deferred:
    return task.deferLater(the_reactor(), 0, lambda: None)


def corrupt_entry(path: str, index: int) -> None:
    execute(path, "UPDATE entries SET crc = crc + 1 WHERE idx = ?", index)


class SqliteStorageTestCase(unittest.TestCase):
    """A fresh data directory per test; every store opened is closed in cleanup."""

    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir(parents=True)
        self.data_file = str(self.data_dir / DATA_FILE_NAME)

    def open_store(self, node_id: int = 1, **kwargs) -> tuple[SqliteStorage, StoredState]:
        """Open and load a store on the data directory; it is closed at cleanup
        (closing stops its writer thread)."""
        store = SqliteStorage(str(self.data_dir), node_id, the_reactor(), **kwargs)
        state = store.load()
        self.addCleanup(store.close)
        return store, state

    def hold_commits(self, connector: ControlledConnector) -> threading.Event:
        """Make the connection's COMMITs wait for the returned gate; cleanup opens it,
        before the store's close waits for the writer thread."""
        gate = threading.Event()
        connector.connection.gate = gate
        self.addCleanup(gate.set)
        return gate

    async def write_entries(self, last: int) -> None:
        store, _ = self.open_store()
        await store.append(entries(1, last))
        await store.close()

    def load_error(self, path: str, node_id: int = 1) -> str:
        """The message of the StorageError loading `path` raises; it must be one line."""
        with self.assertRaises(StorageError) as caught:
            SqliteStorage(path, node_id, the_reactor()).load()
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message


class GroupCommitTests(SqliteStorageTestCase):
    """Writes share transactions; each fires once its transaction committed."""

    async def test_writes_of_one_reactor_turn_share_one_commit(self):
        store, _ = self.open_store()
        await defer.gatherResults([store.append([entry(i)]) for i in range(1, 201)])
        self.assertEqual(store.entries_written, 200)
        self.assertLessEqual(store.commit_count, 3)

    async def test_writes_queued_while_a_commit_is_in_flight_share_the_next(self):
        connector = ControlledConnector()
        store, _ = self.open_store(connect=connector)
        gate = self.hold_commits(connector)
        writes = [store.append([entry(1)])]
        for turn in range(5):
            await next_turn()
            writes += [store.append([entry(i)]) for i in range(2 + 10 * turn, 12 + 10 * turn)]
        self.assertEqual([d for d in writes if d.called], [])
        gate.set()
        await defer.gatherResults(writes)
        self.assertEqual((store.commit_count, store.entries_written), (2, 51))

    async def test_a_write_of_nothing_completes_after_the_one_in_flight(self):
        """A compaction that keeps its entries writes nothing. Issued while an append is
        being committed, it completes after that append all the same: the Raft service
        counts its writes durable in the order it issued them (in the other order a
        node took itself for behind on its own disk and stopped answering its peers,
        which wedged the whole cluster)."""
        connector = ControlledConnector()
        store, _ = self.open_store(connect=connector)
        gate = self.hold_commits(connector)
        done: list[str] = []
        append = store.append(entries(1, 3))
        append.addCallback(lambda _: done.append("append"))
        await next_turn()  # the append is being committed
        kept = store.save_compaction(2, 1, b"two")
        kept.addCallback(lambda _: done.append("compaction"))
        await next_turn()
        self.assertEqual(done, [])
        gate.set()
        await defer.gatherResults([append, kept])
        self.assertEqual(done, ["append", "compaction"])

    async def test_entries_appended_after_the_last_are_one_statement(self):
        # Each statement lets go of the GIL and must win it back from a busy leader's
        # reactor and gRPC loop: appends at the end of the log are one INSERT that
        # commits by itself; only replacing a tail takes a transaction of several.
        connector = ControlledConnector()
        store, _ = self.open_store(connect=connector)
        statements: list[str] = []
        connector.connection.set_trace_callback(statements.append)
        await defer.gatherResults([store.append(entries(1, 3)), store.append(entries(4, 6))])
        self.assertEqual([sql.split()[:3] for sql in statements], [["INSERT", "INTO", "entries"]])
        statements.clear()
        await store.append([entry(5, term=2)])
        self.assertEqual(
            [sql.split()[0] for sql in statements], ["BEGIN", "DELETE", "INSERT", "COMMIT"]
        )
        self.assertEqual(
            execute(self.data_file, "SELECT idx, term FROM entries"),
            [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2)],
        )

    async def test_a_write_fires_only_once_committed(self):
        store, _ = self.open_store()
        d = store.append(entries(1, 3))
        self.assertNoResult(d)
        await d
        self.assertEqual(execute(self.data_file, "SELECT count(*) FROM entries"), [(3,)])


class CompactionTests(SqliteStorageTestCase):
    """A compaction's snapshot is written every few compactions; the entries it covers
    are kept until then."""

    def snapshot_rows(self) -> list:
        return execute(self.data_file, "SELECT idx, data FROM snapshot")

    async def test_a_compaction_keeps_the_entries_and_writes_no_snapshot(self):
        store, _ = self.open_store()
        await store.append(entries(1, 10))
        await store.save_compaction(6, 1, b"six")
        self.assertEqual(self.snapshot_rows(), [])
        self.assertEqual(execute(self.data_file, "SELECT count(*) FROM entries"), [(10,)])

    async def test_the_snapshot_is_written_past_the_bound_of_entries_kept(self):
        self.patch(sqlite_storage, "SNAPSHOT_WRITE_ENTRIES", 5)
        store, _ = self.open_store()
        await store.append(entries(1, 12))
        await store.save_compaction(4, 1, b"four")
        await store.save_compaction(6, 1, b"six")
        self.assertEqual(self.snapshot_rows(), [(6, b"six")])
        await store.save_compaction(11, 1, b"eleven")  # 5 past the one written
        self.assertEqual(self.snapshot_rows(), [(6, b"six")])
        await store.save_compaction(12, 1, b"twelve")
        self.assertEqual(self.snapshot_rows(), [(12, b"twelve")])
        await store.close()
        _, state = self.open_store()
        self.assertEqual((state.snapshot.index, state.entries), (12, []))

    async def test_the_snapshot_is_written_past_the_bound_of_bytes_kept(self):
        """Entries of large batches reach the bytes' bound first; the count starts
        again from the entries a store loads."""
        self.patch(sqlite_storage, "SNAPSHOT_WRITE_BYTES", 100)
        store, _ = self.open_store()
        await store.append(entries(1, 4))  # 4 x 18 bytes
        await store.save_compaction(2, 1, b"two")
        self.assertEqual(self.snapshot_rows(), [])
        await store.close()
        store, _ = self.open_store()
        await store.append(entries(5, 6))
        await store.save_compaction(5, 1, b"five")
        self.assertEqual(self.snapshot_rows(), [(5, b"five")])


class FailingDiskTests(SqliteStorageTestCase):
    """A failed commit breaks the store; writes after close fail."""

    async def test_a_failed_commit_fails_its_writes_and_every_later_one(self):
        connector = ControlledConnector()
        store, _ = self.open_store(connect=connector)
        await store.append([entry(1)])
        connector.connection.fail_commits = DISK_IO_ERROR
        in_failed_commit = [store.append([entry(2)]), store.save_hard_state(1, 1)]
        for d in in_failed_commit:
            with self.assertRaises(StorageError) as caught:
                await d
            self.assertRegex(
                str(caught.exception), "^" + re.escape(f"{self.data_file}: write failed")
            )
        connector.connection.fail_commits = None
        with self.assertRaises(StorageError):
            await store.append([entry(2)])
        self.assertEqual(store.commit_count, 1)
        await store.close()
        _, state = self.open_store()
        self.assertEqual(state, StoredState(entries=[entry(1)]))

    async def failed_write(self, error: tuple[str, str]) -> str:
        """The message of a write whose COMMIT fails with SQLite's `error`."""
        connector = ControlledConnector()
        store, _ = self.open_store(connect=connector)
        connector.connection.fail_commits = error
        with self.assertRaises(StorageError) as caught:
            await store.append([entry(1)])
        return str(caught.exception)

    async def test_a_full_disk_is_named_by_its_os_error(self):
        self.assertEqual(
            await self.failed_write(DISK_FULL),
            f"{self.data_file}: write failed: No space left on device (database or disk is full)",
        )

    async def test_the_os_error_is_the_one_a_probe_write_meets(self):
        # The data directory vanishes under the open file: SQLite says only "disk I/O
        # error"; writing beside the file says what the OS says.
        connector = ControlledConnector()
        store, _ = self.open_store(connect=connector)
        shutil.rmtree(self.data_dir)
        connector.connection.fail_commits = DISK_IO_ERROR
        with self.assertRaises(StorageError) as caught:
            await store.append([entry(1)])
        self.assertEqual(
            str(caught.exception),
            f"{self.data_file}: write failed: No such file or directory (disk I/O error)",
        )

    async def test_no_os_error_is_invented_when_the_disk_takes_writes(self):
        message = await self.failed_write(DISK_IO_ERROR)
        self.assertEqual(message, f"{self.data_file}: write failed (disk I/O error)")
        self.assertNotIn(PROBE_FILE_NAME, os.listdir(self.data_dir))  # the probe is gone

    async def test_writes_after_close_fail(self):
        store, _ = self.open_store()
        await store.close()
        await store.close()
        with self.assertRaises(StorageError):
            await store.save_hard_state(1, 1)


class SettingsTests(SqliteStorageTestCase):
    """WAL with synchronous=FULL; the path may name a directory or the file."""

    def test_wal_mode_and_synchronous_full_are_set(self):
        connector = ControlledConnector()
        self.open_store(connect=connector)
        conn = connector.connection
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone(), ("wal",))
        self.assertEqual(conn.execute("PRAGMA synchronous").fetchone(), (2,))  # FULL

    async def test_the_path_may_name_the_file_itself(self):
        path = str(self.data_dir / "elsewhere.db")
        store = SqliteStorage(path, 1, the_reactor())
        self.addCleanup(store.close)
        self.assertEqual(store.load(), StoredState())
        await store.close()
        self.assertEqual(execute(path, "SELECT value FROM meta WHERE key = 'node_id'"), [("1",)])


class DamagedFileTests(SqliteStorageTestCase):
    """Checksums and SQLite's own checks on load: a torn tail is dropped, any other
    damage, or another program's or node's file, stops the load with one line."""

    async def assertTornTailTruncated(self, torn: list[int]) -> None:
        await self.write_entries(5)
        for index in torn:
            corrupt_entry(self.data_file, index)
        _, state = self.open_store()
        self.assertEqual(state.entries, entries(1, 5 - len(torn)))
        self.assertEqual(
            execute(self.data_file, "SELECT max(idx) FROM entries"), [(5 - len(torn),)]
        )

    async def test_a_torn_last_entry_is_truncated_on_load(self):
        await self.assertTornTailTruncated([5])

    async def test_torn_last_two_entries_are_truncated_on_load(self):
        await self.assertTornTailTruncated([4, 5])

    async def test_a_corrupt_entry_before_valid_ones_stops_the_load(self):
        await self.write_entries(5)
        corrupt_entry(self.data_file, 3)
        self.assertEqual(
            self.load_error(self.data_file),
            f"{self.data_file}: corrupt log entry 3 (checksum mismatch) before valid entries",
        )

    async def test_a_missing_entry_stops_the_load(self):
        await self.write_entries(5)
        execute(self.data_file, "DELETE FROM entries WHERE idx = 3")
        self.assertEqual(
            self.load_error(self.data_file), f"{self.data_file}: log entry 3 is missing (found 4)"
        )

    async def test_a_corrupt_hard_state_stops_the_load(self):
        store, _ = self.open_store()
        await store.save_hard_state(3, 1)
        await store.close()
        execute(self.data_file, "UPDATE hard_state SET voted_for = 2")
        self.assertEqual(
            self.load_error(self.data_file),
            f"{self.data_file}: corrupt hard state (checksum mismatch)",
        )

    async def test_a_corrupt_snapshot_stops_the_load(self):
        store, _ = self.open_store()
        await store.save_snapshot(4, 1, b"state")
        await store.close()
        execute(self.data_file, "UPDATE snapshot SET data = x'00'")
        self.assertEqual(
            self.load_error(self.data_file),
            f"{self.data_file}: corrupt snapshot at index 4 (checksum mismatch)",
        )

    def test_a_file_of_random_bytes_is_refused(self):
        with open(self.data_file, "wb") as f:
            f.write(os.urandom(8192))
        self.assertEqual(
            self.load_error(self.data_file),
            f"{self.data_file}: not a jobsched data file (file is not a database)",
        )

    async def test_a_damaged_sqlite_file_is_refused(self):
        await self.write_entries(200)
        query = "SELECT rootpage FROM sqlite_master WHERE name = 'entries'"
        (root,) = execute(self.data_file, query)[0]
        (page_size,) = execute(self.data_file, "PRAGMA page_size")[0]
        with open(self.data_file, "r+b") as f:
            f.seek((root - 1) * page_size)
            f.write(os.urandom(page_size))
        message = self.load_error(self.data_file)
        self.assertTrue(
            message.startswith(f"{self.data_file}: damaged database ("), f"got {message!r}"
        )

    def test_another_programs_sqlite_file_is_refused(self):
        execute(self.data_file, "CREATE TABLE accounts (id INTEGER)")
        self.assertEqual(
            self.load_error(self.data_file),
            f"{self.data_file}: not a jobsched data file (no meta table)",
        )

    async def test_another_nodes_data_is_refused(self):
        store, _ = self.open_store(node_id=2)
        await store.close()
        self.assertEqual(
            self.load_error(self.data_file, node_id=1),
            f"{self.data_file}: belongs to node 2, not node 1",
        )


class WriterThreadTests(unittest.TestCase):
    """The thread that runs the store's transactions."""

    def make_writer(self) -> WriterThread:
        writer = WriterThread(the_reactor(), "jobsched-test-writer")
        self.addCleanup(writer.stop)
        return writer

    async def test_calls_run_in_order_on_one_other_thread_and_answer_on_the_reactor(self):
        writer = self.make_writer()
        ran_on = []
        answered_on = []

        def call(n):
            ran_on.append((n, threading.current_thread()))
            return n * 10

        runs = [writer.run(call, n) for n in range(5)]
        for d in runs:
            d.addCallback(lambda result: answered_on.append(threading.current_thread()) or result)
        self.assertEqual(await defer.gatherResults(runs), [0, 10, 20, 30, 40])
        self.assertEqual([n for n, _ in ran_on], [0, 1, 2, 3, 4])
        [thread] = {t for _, t in ran_on}
        self.assertEqual(thread.name, "jobsched-test-writer")
        self.assertEqual(set(answered_on), {threading.main_thread()})

    async def test_a_failing_call_fails_its_deferred_and_the_next_calls_run(self):
        writer = self.make_writer()

        def fail():
            raise StorageError("disk gone")

        failing = writer.run(fail)
        following = writer.run(lambda: "still here")
        with self.assertRaisesRegex(StorageError, "disk gone"):
            await failing
        self.assertEqual(await following, "still here")

    def test_stop_lets_the_calls_handed_over_finish(self):
        writer = self.make_writer()
        gate = threading.Event()
        finished = []
        writer.run(lambda: gate.wait(10) and finished.append("first"))
        writer.run(lambda: finished.append("second"))
        threading.Timer(0.05, gate.set).start()  # from another thread: stop() blocks this one
        writer.stop()
        self.assertEqual(finished, ["first", "second"])


class WriterProcessTests(SqliteStorageTestCase):
    """A store writes from a process of its own, which holds the file's lock with the
    node; a second store on the same file is refused while either lives."""

    async def test_a_process_of_its_own_writes_and_ends_with_the_store(self):
        store, _ = self.open_store()
        [pid] = storage_writers(os.getpid())
        self.assertNotEqual(pid, os.getpid())
        await store.append(entries(1, 3))
        self.assertEqual(execute(self.data_file, "SELECT count(*) FROM entries"), [(3,)])
        await store.close()
        self.assertEqual(storage_writers(os.getpid()), [])

    async def test_a_writer_process_that_dies_breaks_the_store(self):
        store, _ = self.open_store()
        await store.append([entry(1)])
        [pid] = storage_writers(os.getpid())
        os.kill(pid, signal.SIGKILL)
        for write in (store.append([entry(2)]), store.save_hard_state(1, 1)):
            with self.assertRaises(StorageError) as caught:
                await write
            self.assertEqual(
                str(caught.exception), f"{self.data_file}: the writer process ended (signal 9)"
            )
        await store.close()
        _, state = self.open_store()
        self.assertEqual(state, StoredState(entries=[entry(1)]))

    def test_a_second_store_on_the_file_is_refused_while_the_first_is_open(self):
        self.patch(sqlite_storage, "LOCK_WAIT_SECONDS", 0.2)
        self.open_store()
        self.assertEqual(
            self.load_error(self.data_file),
            f"{self.data_file}: in use by another process"
            f" (it holds {self.data_file}.lock for more than 0.2s)",
        )

    async def test_the_writer_process_holds_the_lock_too(self):
        # A node killed while its writer finishes a transaction: the node restarted on
        # the file waits for that writer, or it could load the file without it.
        self.patch(sqlite_storage, "LOCK_WAIT_SECONDS", 0.2)
        store, _ = self.open_store()
        store._unlock()  # as if the node were gone: only its writer holds the lock now
        self.assertIn("in use by another process", self.load_error(self.data_file))
        await store.close()
        _, state = self.open_store()
        self.assertEqual(state, StoredState())
