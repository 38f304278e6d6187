"""A durable IRaftStorage: term, vote, log and latest snapshot in one SQLite file.

The file lives in --data-dir (WAL mode, synchronous=FULL, so a commit is on disk when it
returns). Writes are prepared on the reactor and group-committed by one dedicated writer
thread: everything requested in one reactor turn, plus everything queued while a
transaction is in flight, goes into one transaction, and each write's Deferred fires on
the reactor once its transaction has committed. A failed transaction breaks the store:
that write and every later one errback with a StorageError naming the file and the OS
error behind it. Every record carries a CRC-32 checked on load.
"""

from __future__ import annotations

import errno
import os
import queue
import sqlite3
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jobsched.interfaces import IRaftStorage
from jobsched.raft.messages import LogEntry
from jobsched.raft.storage import Snapshot, StoredState

__all__ = ["DATA_FILE_NAME", "FORMAT", "SqliteStorage", "StorageError"]

log = Logger()

DATA_FILE_NAME = "raft.sqlite3"
FORMAT = "jobsched-raft-1"
PROBE_FILE_NAME = ".raft-write-probe"
PROBE_BYTES = 64 * 1024

# SQLite result codes of a disk that fails (the extended IOERR codes start alike).
_DISK_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")

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
_INSERT_ENTRIES = "INSERT INTO entries (idx, term, command, crc) VALUES "
_ENTRY_VALUES = "(?, ?, ?, ?)"
# Rows per INSERT statement: 4 parameters each, well under SQLite's 32,766 a statement.
_ROWS_PER_INSERT = 1000
_DELETE_FROM = "DELETE FROM entries WHERE idx >= ?"
_DELETE_UP_TO = "DELETE FROM entries WHERE idx <= ?"

# One SQL statement with the parameter rows it runs for (executemany); log entries
# are (_INSERT_ENTRIES, rows): one multi-row INSERT each _ROWS_PER_INSERT rows.
_Statement = tuple[str, Sequence[tuple[Any, ...]]]
# A requested write: its statements, how many log entries it holds, its Deferred.
_Write = tuple[list[_Statement], int, defer.Deferred]
Connect = Callable[..., sqlite3.Connection]


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


class StorageError(Exception):
    """The data file cannot be used (damaged, foreign, another node's) or a write failed.

    The message is one line naming the file, fit to show an operator as is.
    """


def _is_disk_error(error: sqlite3.Error) -> bool:
    """Whether SQLite's code says the disk failed (full, I/O, read-only, cannot open)."""
    return (getattr(error, "sqlite_errorname", None) or "").startswith(_DISK_ERRORS)


def _checksum(first: int, second: int, payload: bytes = b"") -> int:
    """CRC-32 of a record: its two integer fields and its payload."""
    return zlib.crc32(struct.pack("<qq", first, second) + payload)


def _intact(first: Any, second: Any, payload: Any, crc: Any) -> bool:
    """Whether a stored record matches its checksum (False for mistyped columns too)."""
    try:
        return _checksum(first, second, payload) == crc
    except (TypeError, struct.error):
        return False


@implementer(IRaftStorage)
class SqliteStorage:
    """IRaftStorage in one SQLite file, written by one writer thread with group commit.

    `commit_count` counts the committed (fsync-bearing) transactions and
    `entries_written` the log entries they held, so commits per entry can be reported.
    `connect` opens the database (sqlite3.connect's signature); tests inject a failing one.
    """

    def __init__(
        self, path_or_dir: str, node_id: int, reactor: Any, connect: Connect = sqlite3.connect
    ) -> None:
        self.path = path_or_dir
        self.node_id = node_id
        self.commit_count = 0
        self.entries_written = 0
        self._reactor = reactor
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._writer: WriterThread | None = None
        self._shutdown_trigger: Any = None
        self._pending: list[_Write] = []
        self._flush_call: Any = None
        self._in_flight = False
        self._broken: Failure | None = None
        self._closing = False
        # The log's last index once every write requested so far is done: an append
        # past it needs no DELETE of a tail (and so is one statement).
        self._last_index = 0

    # ------------------------------------------------------------------ start-up

    def load(self) -> StoredState:
        """Open (or create) the file, check it is this node's and intact, and read it.

        Blocks; called once before the reactor serves. Raises StorageError.
        """
        if self._conn is not None:
            raise RuntimeError(f"{self.path}: already loaded")
        if os.path.isdir(self.path):
            self.path = os.path.join(self.path, DATA_FILE_NAME)
        conn = self._open()
        try:
            state = self._read(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        last = state.entries[-1] if state.entries else state.snapshot
        self._last_index = last.index if last else 0
        self._writer = WriterThread(self._reactor, "jobsched-sqlite-writer")
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

    def _open(self) -> sqlite3.Connection:
        """Connect, check integrity and settings, create the schema in a fresh file."""
        try:
            # Used by the writer thread after load() returns, never by two at once.
            conn = self._connect(self.path, isolation_level=None, check_same_thread=False)
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
            if _is_disk_error(e):
                raise self._disk_error("cannot read", e) from None
            raise self._error(f"damaged database ({e})") from None
        if problems != ["ok"]:
            raise self._error(f"damaged database ({problems[0]})")
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
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
        return StorageError(f"{self.path}: {' '.join(reason.split())}")

    def _disk_error(self, what: str, error: sqlite3.Error) -> StorageError:
        """`<file>: <what>: <OS error> (<SQLite's message>)`. SQLite reports only its own
        code ("database or disk is full", "disk I/O error"); the OS error is what a probe
        write beside the file meets now, or ENOSPC for SQLITE_FULL (its cause in the unix
        VFS) when the probe gets through."""
        cause = self._probe_write() if _is_disk_error(error) else None
        if cause is None and getattr(error, "sqlite_errorname", None) == "SQLITE_FULL":
            cause = os.strerror(errno.ENOSPC)
        if cause is None:
            return self._error(f"{what} ({error})")
        return self._error(f"{what}: {cause} ({error})")

    def _probe_write(self) -> str | None:
        """Write, sync and remove a small file in the data file's directory (blocks);
        the OS error's text if that fails, else None."""
        probe = os.path.join(os.path.dirname(os.path.abspath(self.path)), PROBE_FILE_NAME)
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = memoryview(bytes(PROBE_BYTES))
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as e:
            return e.strerror or str(e)
        return None

    # ------------------------------------------------------------------ writes

    def save_hard_state(self, term: int, voted_for: int) -> defer.Deferred:
        return self._submit([(_SAVE_HARD_STATE, [(term, voted_for, _checksum(term, voted_for))])])

    def append(self, entries: Sequence[LogEntry]) -> defer.Deferred:
        if not entries:
            return self._submit([])
        rows = []
        for entry in entries:
            command = entry.command
            rows.append(
                (entry.index, entry.term, command, _checksum(entry.index, entry.term, command))
            )
        statements: list[_Statement] = [(_INSERT_ENTRIES, rows)]
        if entries[0].index <= self._last_index:  # replaces a tail: drop it first
            statements.insert(0, (_DELETE_FROM, [(entries[0].index,)]))
        self._last_index = entries[-1].index
        return self._submit(statements, len(rows))

    def truncate(self, from_index: int) -> defer.Deferred:
        self._last_index = min(self._last_index, from_index - 1)
        return self._submit([(_DELETE_FROM, [(from_index,)])])

    def save_snapshot(self, index: int, term: int, data: bytes) -> defer.Deferred:
        data = bytes(data)
        self._last_index = max(self._last_index, index)
        return self._submit(
            [
                (_SAVE_SNAPSHOT, [(index, term, data, _checksum(index, term, data))]),
                (_DELETE_UP_TO, [(index,)]),
            ]
        )

    def close(self) -> defer.Deferred:
        """Let every pending write finish, then close the connection and stop the thread."""
        if self._conn is None or self._closing:
            return defer.succeed(None)
        barrier = self._submit([])
        self._closing = True
        barrier.addErrback(lambda _: None)  # those writes' own Deferreds carry the failure
        barrier.addCallback(lambda _: self._writer.run(self._conn.close))
        barrier.addBoth(self._stop_thread)
        return barrier

    def _stop_thread(self, result: Any) -> Any:
        self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
        self._writer.stop()  # the thread is idle now: joining it does not wait
        self._conn = None
        return result

    def _submit(self, statements: list[_Statement], entries: int = 0) -> defer.Deferred:
        """Queue one write; it goes into the next transaction."""
        if self._broken is not None:
            return defer.fail(self._broken)
        if self._conn is None or self._closing:
            return defer.fail(self._error("write to a store that is not open"))
        d = defer.Deferred()
        self._pending.append((statements, entries, d))
        if not self._in_flight and self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        """Hand everything queued so far to the writer thread as one transaction."""
        self._flush_call = None
        batch, self._pending = self._pending, []
        self._in_flight = True
        d = self._writer.run(self._write, _merged([s for write in batch for s in write[0]]))
        d.addBoth(self._written, batch)

    def _write(self, statements: list[_Statement]) -> bool:
        """Run in the writer thread: one transaction; True if one was committed.

        Each statement lets go of the GIL while SQLite runs it and must win it back
        from the reactor and the gRPC loop, which on a busy leader costs up to the
        interpreter's switch interval: so the common transaction, log entries appended
        after the last, is one multi-row INSERT that commits by itself."""
        if not statements:
            return False
        conn = self._conn
        try:
            if len(statements) == 1 and _fits_one_insert(statements[0]):
                _run(conn, statements[0])
            else:
                conn.execute("BEGIN IMMEDIATE")
                for statement in statements:
                    _run(conn, statement)
                conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                with suppress(sqlite3.Error):  # the store is broken either way
                    conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise self._disk_error("write failed", e) from None
            raise
        return True

    def _written(self, outcome: Any, batch: list[_Write]) -> None:
        """On the reactor: start the next transaction first, then wake this batch's
        writers (so the writes they issue queue behind it instead of going one by one)."""
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
            self._flush()
        for _, _, d in batch:
            d.callback(None)


def _merged(statements: list[_Statement]) -> list[_Statement]:
    """The statements in order, with each run of log-entry inserts made one."""
    merged: list[_Statement] = []
    for sql, rows in statements:
        if sql == _INSERT_ENTRIES and merged and merged[-1][0] == _INSERT_ENTRIES:
            merged[-1][1].extend(rows)
        else:
            merged.append((sql, list(rows)))
    return merged


def _fits_one_insert(statement: _Statement) -> bool:
    sql, rows = statement
    return sql == _INSERT_ENTRIES and len(rows) <= _ROWS_PER_INSERT


def _run(conn: sqlite3.Connection, statement: _Statement) -> None:
    """Run one statement for its rows: log entries as multi-row INSERTs."""
    sql, rows = statement
    if sql != _INSERT_ENTRIES:
        conn.executemany(sql, rows)
        return
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        values = ", ".join([_ENTRY_VALUES] * len(chunk))
        conn.execute(_INSERT_ENTRIES + values, [value for row in chunk for value in row])
