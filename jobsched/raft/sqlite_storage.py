"""A durable IRaftStorage: term, vote, log and latest snapshot in one SQLite file.

The file lives in --data-dir (WAL mode, synchronous=FULL, so a commit is on disk when it
returns). The node reads it once at start-up; from then on a writer process of its own
(jobsched/raft/sqlite_writer.py) writes it with group commit: everything requested in
one reactor turn, plus everything queued while a transaction is in flight, goes into one
transaction, and each write's Deferred fires on the reactor once its transaction has
committed. A failed transaction breaks the store: that write and every later one errback
with a StorageError naming the file and the OS error behind it. Every record carries a
CRC-32 checked on load. A lock on `<file>.lock`, held by the node and its writer, keeps a
second node (or a restarted one whose predecessor's writer still finishes) out.
"""

from __future__ import annotations

import fcntl
import os
import queue
import sqlite3
import struct
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jobsched.interfaces import IRaftStorage
from jobsched.raft import sqlite_writer
from jobsched.raft.messages import LogEntry
from jobsched.raft.sqlite_writer import (
    INSERT_ENTRIES,
    PROBE_FILE_NAME,
    Connect,
    Statement,
    StorageError,
    Transactions,
    configure,
    disk_error,
    file_error,
    is_disk_error,
    merged,
)
from jobsched.raft.storage import Snapshot, StoredState

__all__ = ["DATA_FILE_NAME", "FORMAT", "PROBE_FILE_NAME", "SqliteStorage", "StorageError"]

log = Logger()

DATA_FILE_NAME = "raft.sqlite3"
FORMAT = "jobsched-raft-1"
LOCK_SUFFIX = ".lock"
# How long load() waits for the lock: a node killed a moment ago leaves its writer
# finishing the transaction in flight.
LOCK_WAIT_SECONDS = 10.0
_LOCK_RETRY_SECONDS = 0.05
# A compaction's snapshot (every 1,000 entries: the whole job table, megabytes) is
# written once the entries kept since the last one written pass either bound; until
# then those entries are the record, and a restart replays them.
SNAPSHOT_WRITE_ENTRIES = 8_000
SNAPSHOT_WRITE_BYTES = 16 << 20

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 0),"
    " term INTEGER NOT NULL, voted_for INTEGER NOT NULL, crc INTEGER NOT NULL)",
    "CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 0),"
    " idx INTEGER NOT NULL, term INTEGER NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL)",
    "CREATE TABLE entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
    " command BLOB NOT NULL, crc INTEGER NOT NULL)",
)

_SAVE_HARD_STATE = (
    "INSERT OR REPLACE INTO hard_state (id, term, voted_for, crc) VALUES (0, ?, ?, ?)"
)
_SAVE_SNAPSHOT = "INSERT OR REPLACE INTO snapshot (id, idx, term, data, crc) VALUES (0, ?, ?, ?, ?)"
_DELETE_FROM = "DELETE FROM entries WHERE idx >= ?"
_DELETE_UP_TO = "DELETE FROM entries WHERE idx <= ?"

# A requested write: its statements, how many log entries it holds, its Deferred.
_Write = tuple[list[Statement], int, defer.Deferred]


class WriterThread:
    """One thread that runs the calls handed to it, in order; each call's Deferred
    fires on the reactor with its outcome.

    Lean on purpose: a C queue in, one `callFromThread` out. Twisted's ThreadPool costs
    several Python steps and a condition variable on each side of every call, which at
    a transaction per reactor turn was 0.5 ms of GIL time per committed write over three
    nodes (docs/performance.md, tenth pass)."""

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, call: Callable[..., Any], *args: Any) -> defer.Deferred:
        d = defer.Deferred()
        self._calls.put((call, args, d))
        return d

    def stop(self) -> None:
        """Let the calls already handed over finish, then end the thread (waits for it)."""
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while (work := self._calls.get()) is not None:
            call, args, d = work
            try:
                outcome = call(*args)
            except BaseException:
                outcome = Failure()
            fire = d.errback if isinstance(outcome, Failure) else d.callback
            self._reactor.callFromThread(fire, outcome)


def _checksum(first: int, second: int, payload: bytes = b"") -> int:
    """CRC-32 of a record: its two integer fields and its payload."""
    return zlib.crc32(struct.pack("<qq", first, second) + payload)


def _intact(first: Any, second: Any, payload: Any, crc: Any) -> bool:
    """Whether a stored record matches its checksum (False for mistyped columns too)."""
    try:
        return _checksum(first, second, payload) == crc
    except (TypeError, struct.error):
        return False


class WriterProcess(protocol.ProcessProtocol):
    """The process that runs a store's transactions (sqlite_writer.py), in order.

    `run(statements)` hands one transaction over; its Deferred fires on the reactor
    with True once it committed, or fails with the StorageError the process reports,
    or with one saying the process ended. The process inherits `lock_fd`, so the lock
    on the file is held until the process, too, has ended."""

    def __init__(self, reactor: Any, path: str, lock_fd: int) -> None:
        self.path = path
        self._waiting: deque[defer.Deferred] = deque()
        self._received = b""
        self._ended: Failure | None = None
        self._on_end: list[defer.Deferred] = []
        script = sqlite_writer.__file__
        self._transport = reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-I", script, path],
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: 2, 3: lock_fd},
        )

    def run(self, statements: list[Statement]) -> defer.Deferred:
        if self._ended is not None:
            return defer.fail(self._ended)
        d = defer.Deferred()
        self._waiting.append(d)
        self._transport.write(sqlite_writer.frame(statements))
        return d

    def stop(self) -> defer.Deferred:
        """End the process once it has run what it was handed; fires when it ended."""
        if self._ended is not None:
            return defer.succeed(None)
        self._transport.closeStdin()
        d = defer.Deferred()
        self._on_end.append(d)
        return d

    def outReceived(self, data: bytes) -> None:
        lines = (self._received + data).split(b"\n")
        self._received = lines.pop()
        for line in lines:
            d = self._waiting.popleft()
            if line.startswith(sqlite_writer.COMMITTED):
                d.callback(True)
            else:
                d.errback(StorageError(line[1:].decode(errors="replace")))

    def processEnded(self, reason: Failure) -> None:
        status = reason.value
        how = f"signal {status.signal}" if status.signal else f"exit code {status.exitCode}"
        self._ended = Failure(file_error(self.path, f"the writer process ended ({how})"))
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(self._ended)
        for d in self._on_end:
            d.callback(None)


class _WriterInProcess:
    """Runs the transactions on a connection of this process, from a WriterThread
    (for tests that make that connection stall or fail)."""

    def __init__(self, reactor: Any, transactions: Transactions) -> None:
        self._transactions = transactions
        self._thread = WriterThread(reactor, "jobsched-sqlite-writer")

    def run(self, statements: list[Statement]) -> defer.Deferred:
        return self._thread.run(self._transactions.run, statements)

    def stop(self) -> defer.Deferred:
        d = self._thread.run(self._transactions.close)
        d.addBoth(lambda result: self._thread.stop())
        return d


@implementer(IRaftStorage)
class SqliteStorage:
    """IRaftStorage in one SQLite file, written by a process of its own with group commit.

    `commit_count` counts the committed (fsync-bearing) transactions and
    `entries_written` the log entries they held, so commits per entry can be reported.
    `connect` (sqlite3.connect's signature), for tests, opens a database that this
    process writes from a thread, instead of the writer process.
    """

    def __init__(
        self, path_or_dir: str, node_id: int, reactor: Any, connect: Connect | None = None
    ) -> None:
        self.path = path_or_dir
        self.node_id = node_id
        self.commit_count = 0
        self.entries_written = 0
        self.snapshots_written = 0
        self._reactor = reactor
        self._connect = connect
        self._lock_fd: int | None = None
        self._writer: WriterProcess | _WriterInProcess | None = None
        self._shutdown_trigger: Any = None
        self._pending: list[_Write] = []
        self._flush_call: Any = None
        self._in_flight = False
        self._broken: Failure | None = None
        self._closing = False
        # The log's last index once every write requested so far is done: an append
        # past it needs no DELETE of a tail (and so is one statement).
        self._last_index = 0
        # The snapshot in the file, and the bytes of the commands kept after it.
        self._snapshot_index = 0
        self._kept_bytes = 0

    # ------------------------------------------------------------------ start-up

    def load(self) -> StoredState:
        """Lock the file, open (or create) it, check it is this node's and intact,
        read it, and start its writer.

        Blocks; called once before the reactor serves. Raises StorageError.
        """
        if self._writer is not None:
            raise RuntimeError(f"{self.path}: already loaded")
        if os.path.isdir(self.path):
            self.path = os.path.join(self.path, DATA_FILE_NAME)
        self._lock_fd = self._lock()
        try:
            state = self._read_and_start_writer()
        except BaseException:
            self._unlock()
            raise
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._writer.stop
        )
        log.info(
            "Durable storage {path}: term {term}, {count} log entries, snapshot at {index}",
            path=self.path,
            term=state.term,
            count=len(state.entries),
            index=state.snapshot.index if state.snapshot else 0,
        )
        return state

    def _read_and_start_writer(self) -> StoredState:
        """Read the file, then hand its writes to a writer: a process of its own, or
        (given `connect`) a thread of this process on the connection that read it."""
        conn = self._open()
        try:
            state = self._read(conn)
            if self._connect is None:
                conn.close()
                self._writer = WriterProcess(self._reactor, self.path, self._lock_fd)
            else:
                self._writer = _WriterInProcess(self._reactor, Transactions(self.path, conn))
        except BaseException:
            conn.close()
            raise
        last = state.entries[-1] if state.entries else state.snapshot
        self._last_index = last.index if last else 0
        self._snapshot_index = state.snapshot.index if state.snapshot else 0
        self._kept_bytes = sum(len(entry.command) for entry in state.entries)
        return state

    def _lock(self) -> int:
        """Take the lock on `<file>.lock`, waiting up to LOCK_WAIT_SECONDS for a node
        (or the writer of a node) that has it; its descriptor."""
        path = self.path + LOCK_SUFFIX
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise self._error(f"cannot open its lock file {path}: {e.strerror}") from None
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise self._error(
                        f"in use by another process (it holds {path}"
                        f" for more than {LOCK_WAIT_SECONDS:g}s)"
                    ) from None
                time.sleep(_LOCK_RETRY_SECONDS)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> sqlite3.Connection:
        """Connect, check integrity and settings, create the schema in a fresh file."""
        try:
            conn = sqlite_writer.connect(self.path, self._connect or sqlite3.connect)
        except sqlite3.Error as e:
            raise self._disk_error("cannot open", e) from None
        try:
            self._check(conn)
            if not self._tables(conn):
                self._create(conn)
            self._check_meta(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") == "SQLITE_NOTADB":
                raise self._error(f"not a jobsched data file ({e})") from None
            if is_disk_error(e):
                raise self._disk_error("cannot read", e) from None
            raise self._error(f"damaged database ({e})") from None
        if problems != ["ok"]:
            raise self._error(f"damaged database ({problems[0]})")
        try:
            mode = configure(conn)
        except sqlite3.Error as e:
            raise self._disk_error("cannot configure the database", e) from None
        if mode.lower() != "wal":
            raise self._error(f"cannot switch to WAL mode (journal mode is {mode})")

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> list[str]:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return [row[0] for row in tables]

    def _create(self, conn: sqlite3.Connection) -> None:
        """Create the schema and the meta marker in one transaction, then sync the
        directory so the new file itself survives a crash."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql in _SCHEMA:
                conn.execute(sql)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("format", FORMAT), ("node_id", str(self.node_id))],
            )
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._disk_error("cannot create the data file", e) from None
        try:
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as e:
            raise self._error(f"cannot sync its directory: {e.strerror}") from None

    def _check_meta(self, conn: sqlite3.Connection) -> None:
        if "meta" not in self._tables(conn):
            raise self._error("not a jobsched data file (no meta table)")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as e:
            raise self._error(f"not a jobsched data file ({e})") from None
        if meta.get("format") != FORMAT:
            raise self._error(f"not a jobsched data file (format {meta.get('format')!r})")
        if meta.get("node_id") != str(self.node_id):
            raise self._error(f"belongs to node {meta.get('node_id')}, not node {self.node_id}")

    def _read(self, conn: sqlite3.Connection) -> StoredState:
        """Read every record, verifying checksums; truncate a torn tail of the log."""
        state = StoredState()
        try:
            row = conn.execute("SELECT term, voted_for, crc FROM hard_state").fetchone()
            if row is not None:
                if not _intact(row[0], row[1], b"", row[2]):
                    raise self._error("corrupt hard state (checksum mismatch)")
                state.term, state.voted_for = row[0], row[1]
            row = conn.execute("SELECT idx, term, data, crc FROM snapshot").fetchone()
            if row is not None:
                if not _intact(*row):
                    raise self._error(f"corrupt snapshot at index {row[0]} (checksum mismatch)")
                state.snapshot = Snapshot(row[0], row[1], bytes(row[2]))
            rows = conn.execute(
                "SELECT idx, term, command, crc FROM entries ORDER BY idx"
            ).fetchall()
        except sqlite3.Error as e:
            raise self._disk_error("cannot read", e) from None
        valid = [_intact(*row) for row in rows]
        keep = len(rows)
        while keep and not valid[keep - 1]:
            keep -= 1
        if not all(valid[:keep]):
            bad = rows[valid.index(False)][0]
            raise self._error(f"corrupt log entry {bad} (checksum mismatch) before valid entries")
        expected = state.snapshot.index + 1 if state.snapshot else 1
        for idx, term, command, _ in rows[:keep]:
            if idx != expected:
                raise self._error(f"log entry {expected} is missing (found {idx})")
            state.entries.append(LogEntry(term, idx, bytes(command)))
            expected += 1
        if keep < len(rows):
            self._drop_torn_tail(conn, rows[keep][0], len(rows) - keep)
        return state

    def _drop_torn_tail(self, conn: sqlite3.Connection, from_index: int, count: int) -> None:
        log.warn(
            "{path}: dropping a torn tail of {count} log entries from index {index}",
            path=self.path,
            count=count,
            index=from_index,
        )
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_DELETE_FROM, (from_index,))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._disk_error("cannot truncate the torn tail", e) from None

    def _error(self, reason: str) -> StorageError:
        return file_error(self.path, reason)

    def _disk_error(self, what: str, error: sqlite3.Error) -> StorageError:
        return disk_error(self.path, what, error)

    # ------------------------------------------------------------------ writes

    def save_hard_state(self, term: int, voted_for: int) -> defer.Deferred:
        return self._submit([(_SAVE_HARD_STATE, [(term, voted_for, _checksum(term, voted_for))])])

    def append(self, entries: Sequence[LogEntry]) -> defer.Deferred:
        if not entries:
            return self._submit([])
        rows = []
        kept = 0
        for entry in entries:
            command = entry.command
            kept += len(command)
            rows.append(
                (entry.index, entry.term, command, _checksum(entry.index, entry.term, command))
            )
        self._kept_bytes += kept
        statements: list[Statement] = [(INSERT_ENTRIES, rows)]
        if entries[0].index <= self._last_index:  # replaces a tail: drop it first
            statements.insert(0, (_DELETE_FROM, [(entries[0].index,)]))
        self._last_index = entries[-1].index
        return self._submit(statements, len(rows))

    def truncate(self, from_index: int) -> defer.Deferred:
        self._last_index = min(self._last_index, from_index - 1)
        return self._submit([(_DELETE_FROM, [(from_index,)])])

    def save_compaction(self, index: int, term: int, data: bytes) -> defer.Deferred:
        """Keep the entries up to `index` instead of writing the snapshot, while they
        are all in the file and within SNAPSHOT_WRITE_ENTRIES and _BYTES of the last
        snapshot written: a compaction every 1,000 entries would otherwise write the
        whole table each time (in order with the writes before it all the same)."""
        if (
            index <= self._last_index
            and index - self._snapshot_index <= SNAPSHOT_WRITE_ENTRIES
            and self._kept_bytes <= SNAPSHOT_WRITE_BYTES
        ):
            return self._submit([])
        return self.save_snapshot(index, term, data)

    def save_snapshot(self, index: int, term: int, data: bytes) -> defer.Deferred:
        data = bytes(data)
        self._last_index = max(self._last_index, index)
        self._snapshot_index = index
        self._kept_bytes = 0
        self.snapshots_written += 1
        return self._submit(
            [
                (_SAVE_SNAPSHOT, [(index, term, data, _checksum(index, term, data))]),
                (_DELETE_UP_TO, [(index,)]),
            ]
        )

    def close(self) -> defer.Deferred:
        """Let every pending write finish, then stop the writer and release the lock."""
        if self._writer is None or self._closing:
            return defer.succeed(None)
        barrier = self._submit([])
        self._closing = True
        barrier.addErrback(lambda _: None)  # those writes' own Deferreds carry the failure
        barrier.addCallback(lambda _: self._writer.stop())
        barrier.addBoth(self._closed)
        return barrier

    def _closed(self, result: Any) -> Any:
        self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
        self._writer = None
        self._unlock()
        return result

    def _submit(self, statements: list[Statement], entries: int = 0) -> defer.Deferred:
        """Queue one write; it goes into the next transaction."""
        if self._broken is not None:
            return defer.fail(self._broken)
        if self._writer is None or self._closing:
            return defer.fail(self._error("write to a store that is not open"))
        d = defer.Deferred()
        self._pending.append((statements, entries, d))
        if not self._in_flight and self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        """Hand everything queued so far to the writer as one transaction."""
        self._flush_call = None
        batch, self._pending = self._pending, []
        statements = merged([s for write in batch for s in write[0]])
        self._in_flight = True
        d = self._writer.run(statements) if statements else defer.succeed(False)
        d.addBoth(self._written, batch)

    def _written(self, outcome: Any, batch: list[_Write]) -> None:
        """On the reactor: start the next transaction first, then wake this batch's
        writers (so the writes they issue queue behind it instead of going one by one).
        Writes queued meanwhile that write nothing (a compaction keeping its entries)
        are done with this batch, after it: run as a batch of their own they would
        complete at once, before this batch's writers heard of theirs."""
        self._in_flight = False
        if isinstance(outcome, Failure):
            self._broken = outcome
            batch += self._pending
            self._pending = []
            for _, _, d in batch:
                d.errback(outcome)
            return
        if outcome:
            self.commit_count += 1
            self.entries_written += sum(entries for _, entries, _ in batch)
        if self._pending:
            if any(statements for statements, _, _ in self._pending):
                self._flush()
            else:
                batch += self._pending
                self._pending = []
        for _, _, d in batch:
            d.callback(None)
