"""The transactions that write a node's SQLite file, and the process that runs them.

SqliteStorage starts this file as a process of its own (`python -I sqlite_writer.py
FILE`): a writer thread inside the node must win the GIL back from the reactor and the
gRPC loop after every step of a transaction, which on a busy leader cost more than the
transaction itself (docs/performance.md, fifteenth pass). The node hands over one
transaction at a time: a frame on the process's stdin (a 4-byte little-endian length,
then the statements, marshalled), answered by one line on its stdout: `+` once it
committed, or `!` and the StorageError's message. At the end of its stdin the process
closes the database and exits.

Standard library only, so that the process starts in milliseconds and shares nothing
with the node but the file.
"""

from __future__ import annotations

import errno
import marshal
import os
import sqlite3
import struct
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, BinaryIO

PROBE_FILE_NAME = ".raft-write-probe"
PROBE_BYTES = 64 * 1024

# SQLite result codes of a disk that fails (the extended IOERR codes start alike).
_DISK_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")

INSERT_ENTRIES = "INSERT INTO entries (idx, term, command, crc) VALUES "
_ENTRY_VALUES = "(?, ?, ?, ?)"
# Rows per INSERT statement: 4 parameters each, well under SQLite's 32,766 a statement.
ROWS_PER_INSERT = 1000

# One SQL statement with the parameter rows it runs for (executemany); log entries
# are (INSERT_ENTRIES, rows): one multi-row INSERT each ROWS_PER_INSERT rows.
Statement = tuple[str, Sequence[tuple[Any, ...]]]
Connect = Callable[..., sqlite3.Connection]

_FRAME_HEADER = struct.Struct("<I")
COMMITTED = b"+"
FAILED = b"!"


class StorageError(Exception):
    """The data file cannot be used (damaged, foreign, another node's) or a write failed.

    The message is one line naming the file, fit to show an operator as is.
    """


def connect(path: str, open_database: Connect = sqlite3.connect) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from the
    one thread that writes, whichever it is."""
    return open_database(path, isolation_level=None, check_same_thread=False)


def configure(conn: sqlite3.Connection) -> str:
    """WAL mode and synchronous=FULL (a commit is on disk when it returns); the
    journal mode SQLite reports. synchronous is a setting of the connection, so every
    connection that writes sets it."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    return mode


def is_disk_error(error: sqlite3.Error) -> bool:
    """Whether SQLite's code says the disk failed (full, I/O, read-only, cannot open)."""
    return (getattr(error, "sqlite_errorname", None) or "").startswith(_DISK_ERRORS)


def file_error(path: str, reason: str) -> StorageError:
    return StorageError(f"{path}: {' '.join(reason.split())}")


def disk_error(path: str, what: str, error: sqlite3.Error) -> StorageError:
    """`<file>: <what>: <OS error> (<SQLite's message>)`. SQLite reports only its own
    code ("database or disk is full", "disk I/O error"); the OS error is what a probe
    write beside the file meets now, or ENOSPC for SQLITE_FULL (its cause in the unix
    VFS) when the probe gets through."""
    cause = probe_write(path) if is_disk_error(error) else None
    if cause is None and getattr(error, "sqlite_errorname", None) == "SQLITE_FULL":
        cause = os.strerror(errno.ENOSPC)
    if cause is None:
        return file_error(path, f"{what} ({error})")
    return file_error(path, f"{what}: {cause} ({error})")


def probe_write(path: str) -> str | None:
    """Write, sync and remove a small file in the data file's directory (blocks); the
    OS error's text if that fails, else None."""
    probe = os.path.join(os.path.dirname(os.path.abspath(path)), PROBE_FILE_NAME)
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


class Transactions:
    """Runs the store's transactions on one connection, one at a time."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    def run(self, statements: list[Statement]) -> bool:
        """One transaction; True if one was committed. Raises StorageError.

        The common transaction, log entries appended after the last, is one multi-row
        INSERT that commits by itself: each statement is a round through SQLite."""
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
                raise disk_error(self.path, "write failed", e) from None
            raise
        return True

    def close(self) -> None:
        self._conn.close()


def merged(statements: list[Statement]) -> list[Statement]:
    """The statements in order, with each run of log-entry inserts made one."""
    result: list[Statement] = []
    for sql, rows in statements:
        if sql == INSERT_ENTRIES and result and result[-1][0] == INSERT_ENTRIES:
            result[-1][1].extend(rows)
        else:
            result.append((sql, list(rows)))
    return result


def _fits_one_insert(statement: Statement) -> bool:
    sql, rows = statement
    return sql == INSERT_ENTRIES and len(rows) <= ROWS_PER_INSERT


def _run(conn: sqlite3.Connection, statement: Statement) -> None:
    """Run one statement for its rows: log entries as multi-row INSERTs."""
    sql, rows = statement
    if sql != INSERT_ENTRIES:
        conn.executemany(sql, rows)
        return
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        values = ", ".join([_ENTRY_VALUES] * len(chunk))
        conn.execute(INSERT_ENTRIES + values, [value for row in chunk for value in row])


def frame(statements: list[Statement]) -> bytes:
    """One transaction as the process reads it from its stdin."""
    body = marshal.dumps(statements)
    return _FRAME_HEADER.pack(len(body)) + body


def _read_frame(stream: BinaryIO) -> list[Statement] | None:
    """The next transaction, or None at the end of the stream (a cut frame included:
    its sender is gone, and nobody waits for it)."""
    header = stream.read(_FRAME_HEADER.size)
    if len(header) < _FRAME_HEADER.size:
        return None
    (size,) = _FRAME_HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return marshal.loads(body)


def serve(path: str, requests: BinaryIO, answers: BinaryIO, open_database: Connect) -> None:
    """Run each transaction read from `requests`, answering each on `answers`, until
    the stream ends; then close the database."""
    conn = connect(path, open_database)
    transactions = Transactions(path, conn)
    try:
        configure(conn)
        while (statements := _read_frame(requests)) is not None:
            try:
                transactions.run(statements)
            except StorageError as e:
                answers.write(FAILED + str(e).encode() + b"\n")
            else:
                answers.write(COMMITTED + b"\n")
            answers.flush()
    finally:
        transactions.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: sqlite_writer.py DATA_FILE", file=sys.stderr)
        return 2
    serve(argv[0], sys.stdin.buffer, sys.stdout.buffer, sqlite3.connect)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
