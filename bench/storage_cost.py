"""What a durable write costs: SqliteStorage (--data-dir) appends on the reactor, against
the same transaction made directly on a SQLite connection.

    .venv/bin/python -m bench.storage_cost [--writes N] [--rounds R]

serial    one append of one 200-byte entry at a time, each waiting for its transaction
          (a leader's log with one client): the hop to the writer and back is in every
          write
grouped   8 appends requested in each reactor turn, then waited for together (group
          commit: one transaction for the turn's writes)
          Both with the store's writer process (`process`, as a node writes) and with
          its in-process writer thread (`thread`: what tests that inject a connection
          get, and what nodes had before the fifteenth pass).
sqlite    BEGIN IMMEDIATE, the append's DELETE and INSERT, COMMIT (WAL, synchronous=FULL)
          in a loop on one thread: the floor of the serial rows

Each row: writes/s, transactions, CPU per write of this process and its writer process.
Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

from twisted.internet import defer, reactor

from bench.common import machine_note, total_cpu_seconds
from jobsched.raft.messages import LogEntry
from jobsched.raft.sqlite_storage import SqliteStorage

ENTRY = b"x" * 200
GROUP = 8


def _cpu() -> float:
    """CPU seconds so far of this process and its writer processes."""
    return total_cpu_seconds([os.getpid()])


def _row(label: str, writes: int, seconds: float, cpu: float, commits: int) -> str:
    return (
        f"{label:<16} {writes / seconds:7.0f} writes/s  {commits:5d} transactions  "
        f"{1000 * cpu / writes:.3f} ms CPU per write   {machine_note()}"
    )


@defer.inlineCallbacks
def _storage_rows(writes: int, directory: str):
    for writer, connect in (("process", None), ("thread", sqlite3.connect)):
        for label, group in (("serial", 1), ("grouped", GROUP)):
            path = os.path.join(directory, f"{writer}-{label}")
            store = SqliteStorage(path, 1, reactor, connect=connect)
            os.makedirs(store.path)
            store.load()
            yield store.append([LogEntry(1, 1, ENTRY)])  # the writer has started
            started, cpu = time.perf_counter(), _cpu()
            for first in range(2, writes + 2, group):
                batch = range(first, min(first + group, writes + 2))
                yield defer.gatherResults([store.append([LogEntry(1, i, ENTRY)]) for i in batch])
            seconds, cpu = time.perf_counter() - started, _cpu() - cpu
            commits = store.commit_count - 1
            print(_row(f"{writer} {label}", writes, seconds, cpu, commits), flush=True)
            yield store.close()


def _sqlite_row(writes: int, directory: str) -> None:
    conn = sqlite3.connect(os.path.join(directory, "bare.sqlite3"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, term, command, crc)")
    started, cpu = time.perf_counter(), _cpu()
    for index in range(1, writes + 1):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM entries WHERE idx >= ?", [(index,)])
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", [(index, 1, ENTRY, 0)])
        conn.execute("COMMIT")
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    conn.close()
    print(_row("sqlite", writes, seconds, cpu, writes), flush=True)


@defer.inlineCallbacks
def _run(args) -> None:
    try:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="jobsched-storage-cost-") as directory:
                yield _storage_rows(args.writes, directory)
                _sqlite_row(args.writes, directory)
    finally:
        reactor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    reactor.callWhenRunning(_run, args)
    reactor.run()


if __name__ == "__main__":
    main()
