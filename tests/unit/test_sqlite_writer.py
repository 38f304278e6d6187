"""The writer process's loop (sqlite_writer.serve), run in this process on streams:
one answer line per transaction, in order; a failed one is named and the next run."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from jobsched.raft import sqlite_writer
from jobsched.raft.sqlite_writer import INSERT_ENTRIES, frame, serve

CREATE = "CREATE TABLE entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
CREATE += " command BLOB NOT NULL, crc INTEGER NOT NULL)"


def rows(first: int, last: int) -> list[tuple[int, int, bytes, int]]:
    return [(i, 1, f"entry {i}".encode(), 0) for i in range(first, last + 1)]


class ServeTests(unittest.TestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.path = str(directory / "raft.sqlite3")
        conn = sqlite3.connect(self.path)
        conn.execute(CREATE)
        conn.close()
        self.statements: list[str] = []
        self.connections: list[sqlite3.Connection] = []

    def open_database(self, *args, **kwargs) -> sqlite3.Connection:
        conn = sqlite3.connect(*args, **kwargs)
        conn.set_trace_callback(self.statements.append)
        self.connections.append(conn)
        return conn

    def serve(self, requests: bytes) -> list[bytes]:
        answers = io.BytesIO()
        serve(self.path, io.BytesIO(requests), answers, self.open_database)
        return answers.getvalue().splitlines()

    def stored(self) -> list[int]:
        conn = sqlite3.connect(self.path)
        try:
            return [idx for (idx,) in conn.execute("SELECT idx FROM entries ORDER BY idx")]
        finally:
            conn.close()

    def test_each_transaction_is_answered_once_committed_in_order(self):
        answers = self.serve(
            frame([(INSERT_ENTRIES, rows(1, 3))]) + frame([(INSERT_ENTRIES, rows(4, 4))])
        )
        self.assertEqual(answers, [b"+", b"+"])
        self.assertEqual(self.stored(), [1, 2, 3, 4])

    def test_a_failed_transaction_is_named_and_the_next_one_runs(self):
        answers = self.serve(
            frame([(INSERT_ENTRIES, rows(1, 2))])
            + frame([(INSERT_ENTRIES, rows(2, 3))])  # entry 2 is there already
            + frame([(INSERT_ENTRIES, rows(3, 3))])
        )
        self.assertEqual(
            answers,
            [
                b"+",
                f"!{self.path}: write failed (UNIQUE constraint failed: entries.idx)".encode(),
                b"+",
            ],
        )
        self.assertEqual(self.stored(), [1, 2, 3])

    def test_the_connection_is_durable_and_closed_at_the_end(self):
        self.serve(frame([(INSERT_ENTRIES, rows(1, 1))]))
        self.assertIn("PRAGMA journal_mode=WAL", self.statements)
        self.assertIn("PRAGMA synchronous=FULL", self.statements)
        [conn] = self.connections
        with self.assertRaises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")

    def test_a_cut_frame_is_not_run(self):
        whole = frame([(INSERT_ENTRIES, rows(1, 1))])
        cut = frame([(INSERT_ENTRIES, rows(2, 2))])[:-3]
        self.assertEqual(self.serve(whole + cut), [b"+"])
        self.assertEqual(self.stored(), [1])

    def test_the_script_runs_alone_and_says_how_to_call_it(self):
        # Started as `python -I sqlite_writer.py FILE`: it must import nothing of ours.
        result = subprocess.run(
            [sys.executable, "-I", sqlite_writer.__file__],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr, "usage: sqlite_writer.py DATA_FILE\n")
