"""The per-job live output buffer (cap, offsets, skipped, many readers, waiting for a
change), reading a job's output from a node's table and buffers, and the router's
"here, or the node running the job", on a Clock."""

import uuid

from twisted.internet import defer, task
from twisted.trial import unittest

from jobsched import errors
from jobsched.jobs.model import Job, JobStatus
from jobsched.routing import Router
from jobsched.worker import output_wire
from jobsched.worker.live_output import (
    STDERR,
    STDOUT,
    LiveOutputs,
    OutputCursor,
    OutputPiece,
    OutputRead,
)
from jobsched.worker.output_reader import LocalOutputReader, finished_output

JOB = "00000000-0000-4000-8000-000000000001"


def data(pieces, stream=STDOUT) -> bytes:
    return b"".join(piece.data for piece in pieces if piece.stream == stream)


class LiveOutputTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.outputs = LiveOutputs(self.clock, cap=10)
        self.live = self.outputs.open(JOB, attempt=2)

    def test_a_reader_gets_what_follows_its_offsets_per_stream(self):
        self.live.write(STDOUT, b"abc")
        self.live.write(STDERR, b"xy")
        pieces, cursor = self.live.read(OutputCursor())
        self.assertEqual(
            pieces,
            (OutputPiece(STDOUT, b"abc", 0, 0, 2), OutputPiece(STDERR, b"xy", 0, 0, 2)),
        )
        self.assertEqual(cursor, OutputCursor(0, 3, 2))
        self.live.write(STDOUT, b"de")
        pieces, cursor = self.live.read(cursor)
        self.assertEqual(pieces, (OutputPiece(STDOUT, b"de", 3, 0, 2),))
        self.assertEqual(cursor, OutputCursor(0, 5, 2))
        self.assertEqual(self.live.read(cursor), ((), cursor))

    def test_the_buffer_keeps_the_last_cap_bytes_and_counts_what_a_reader_missed(self):
        self.live.write(STDOUT, b"0123456789")
        self.live.write(STDOUT, b"abcd")  # 14 bytes written, the last 10 kept
        self.assertEqual(self.live.end(STDOUT), 14)
        pieces, cursor = self.live.read(OutputCursor(stdout=1))
        self.assertEqual(pieces, (OutputPiece(STDOUT, b"456789abcd", 4, 3, 2),))
        self.assertEqual(cursor.stdout, 14)
        # a reader still within the kept tail misses nothing
        pieces, _ = self.live.read(OutputCursor(stdout=12))
        self.assertEqual(pieces, (OutputPiece(STDOUT, b"cd", 12, 0, 2),))

    def test_one_write_larger_than_the_cap_keeps_its_end(self):
        self.live.write(STDERR, b"x" * 25 + b"0123456789")
        pieces, _ = self.live.read(OutputCursor())
        self.assertEqual(pieces, (OutputPiece(STDERR, b"0123456789", 25, 25, 2),))

    def test_pieces_are_at_most_the_limit(self):
        self.live.write(STDOUT, b"0123456789")
        pieces, cursor = self.live.read(OutputCursor(), limit=4)
        self.assertEqual([piece.data for piece in pieces], [b"0123", b"4567", b"89"])
        self.assertEqual([piece.offset for piece in pieces], [0, 4, 8])
        self.assertEqual(cursor.stdout, 10)

    def test_many_readers_share_the_buffer_each_at_its_own_place(self):
        slow, fast = OutputCursor(), OutputCursor()
        self.live.write(STDOUT, b"abcdef")
        pieces, fast = self.live.read(fast)
        self.assertEqual(data(pieces), b"abcdef")
        self.live.write(STDOUT, b"ghijkl")
        pieces, fast = self.live.read(fast)
        self.assertEqual(data(pieces), b"ghijkl")
        pieces, slow = self.live.read(slow)  # fell 2 bytes behind the kept tail
        self.assertEqual((pieces[0].skipped, data(pieces)), (2, b"cdefghijkl"))
        self.assertEqual(slow, fast)

    def test_a_closed_buffer_tells_the_reader_that_it_has_seen_everything(self):
        self.live.write(STDOUT, b"abc")
        self.live.close()
        self.live.write(STDOUT, b"late")  # ignored once the run ended
        pieces, cursor = self.live.read(OutputCursor())
        self.assertEqual(data(pieces), b"abc")
        self.assertTrue(cursor.live_done)

    def test_a_waiting_read_wakes_on_a_write_and_times_out_otherwise(self):
        woken = self.outputs.next_change(JOB, 5)
        self.assertNoResult(woken)
        self.live.write(STDOUT, b"a")
        self.successResultOf(woken)
        self.assertEqual(self.outputs.waiting(JOB), 0)
        idle = self.outputs.next_change(JOB, 5)
        self.clock.advance(5)
        self.successResultOf(idle)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_cancelled_wait_leaves_nothing_behind(self):
        waiting = self.outputs.next_change(JOB, 5)
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        self.assertEqual(self.outputs.waiting(JOB), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_the_buffer_is_forgotten_once_its_job_is_over_or_moved_on(self):
        running = Job(JOB, "x", 0, status=JobStatus.RUNNING, attempts=2, assigned_worker=1)
        self.outputs.job_changed("late_result", running)
        self.assertIs(self.outputs.get(JOB), self.live)
        woken = self.outputs.next_change(JOB, 5)
        self.outputs.job_changed("requeued", Job(JOB, "x", 0, attempts=2))
        self.assertIsNone(self.outputs.get(JOB))
        self.successResultOf(woken)
        self.outputs.open(JOB, 3)
        self.outputs.job_changed("finished", Job(JOB, "x", 0, status=JobStatus.FAILED, attempts=3))
        self.assertEqual(len(self.outputs), 0)

    def test_a_cursor_of_another_attempt_starts_at_the_beginning(self):
        cursor = OutputCursor(1, 50, 60, live_done=True)
        self.assertEqual(cursor.in_attempt(2), OutputCursor(2))
        self.assertEqual(cursor.in_attempt(1), cursor)
        self.assertEqual(OutputCursor(0, 5, 6).in_attempt(3), OutputCursor(3, 5, 6))


class FakeTable:
    def __init__(self, *jobs):
        self.jobs = {job.job_id: job for job in jobs}

    def get(self, job_id):
        return self.jobs.get(job_id)


class LocalOutputReaderTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.outputs = LiveOutputs(self.clock, cap=100)
        self.job = Job(JOB, "x", 0, status=JobStatus.RUNNING, assigned_worker=1, attempts=1)
        self.table = FakeTable(self.job)
        self.reader = LocalOutputReader(1, self.table, self.outputs)

    def test_a_read_of_a_job_running_here_waits_for_its_next_output(self):
        live = self.outputs.open(JOB, 1)
        reading = self.reader.read(JOB, OutputCursor(), wait=5)
        self.assertNoResult(reading)
        live.write(STDOUT, b"hello\n")
        read = self.successResultOf(reading)
        self.assertEqual(data(read.pieces), b"hello\n")
        self.assertEqual((read.cursor, read.status, read.final), (OutputCursor(1, 6, 0), 2, False))

    def test_a_read_with_nothing_new_ends_empty_after_its_wait(self):
        self.outputs.open(JOB, 1)
        reading = self.reader.read(JOB, OutputCursor(), wait=5)
        self.clock.advance(5)
        read = self.successResultOf(reading)
        self.assertEqual((read.pieces, read.final), ((), False))

    def test_a_job_running_elsewhere_has_nothing_here(self):
        self.table.jobs[JOB] = Job(JOB, "x", 0, status=JobStatus.RUNNING, assigned_worker=2)
        read = self.reader.read_now(JOB, OutputCursor())
        self.assertEqual((read.pieces, read.final, read.status), ((), False, JobStatus.RUNNING))

    def test_a_finished_job_is_read_from_the_table_then_ends(self):
        self.table.jobs[JOB] = Job(
            JOB, "x", 0, status=JobStatus.FAILED, attempts=1, exit_code=3, output="out", error="e"
        )
        read = self.successResultOf(self.reader.read(JOB, OutputCursor(stdout=1), wait=5))
        self.assertEqual(
            read.pieces, (OutputPiece(STDOUT, b"ut", 1, 0, 1), OutputPiece(STDERR, b"e", 0, 0, 1))
        )
        self.assertEqual((read.final, read.status, read.exit_code), (True, JobStatus.FAILED, 3))

    def test_a_reader_that_saw_the_whole_live_output_gets_only_the_end(self):
        job = Job(JOB, "x", 0, status=JobStatus.FAILED, attempts=2, error="Timed out after 1s")
        read = finished_output(job, OutputCursor(2, 10, 4, live_done=True))
        self.assertEqual((read.pieces, read.final), ((), True))
        # the same reader of an earlier attempt gets the last attempt's stored output
        read = finished_output(job, OutputCursor(1, 10, 4, live_done=True))
        self.assertEqual(data(read.pieces, STDERR), b"Timed out after 1s")

    def test_a_buffer_of_an_older_attempt_is_not_read(self):
        live = self.outputs.open(JOB, 1)
        live.write(STDOUT, b"old")
        self.table.jobs[JOB] = Job(
            JOB, "x", 0, status=JobStatus.RUNNING, assigned_worker=1, attempts=2
        )
        self.assertEqual(self.reader.read_now(JOB, OutputCursor()).pieces, ())


class FakeApi:
    def __init__(self, table):
        self.table = table

    def get_job(self, job_id):
        job = self.table.get(job_id)
        if job is None:
            raise errors.NotFound("Job not found")
        return job


class FakePeers:
    """IPeerClient: records calls; the test answers or fails them."""

    def __init__(self):
        self.calls = []

    def knows(self, node_id):
        return True

    def internal(self, node_id, method, request, timeout):
        d = defer.Deferred()
        self.calls.append((node_id, method, request, timeout, d))
        return d

    def close(self):
        pass


class OutputRoutingTests(unittest.TestCase):
    """Router.read_output: here, or the node the table says runs the job (never the
    leader); a relay that fails reads here after a pause."""

    def setUp(self):
        self.clock = task.Clock()
        self.outputs = LiveOutputs(self.clock, cap=100)
        self.table = FakeTable(
            Job(JOB, "x", 0, status=JobStatus.RUNNING, assigned_worker=3, attempts=1)
        )
        self.peers = FakePeers()
        reader = LocalOutputReader(2, self.table, self.outputs)
        self.router = Router(FakeApi(self.table), None, reader, self.peers, self.clock)

    def test_a_job_running_elsewhere_is_read_from_its_worker(self):
        reading = self.router.read_output(JOB, OutputCursor(1, 5, 0), wait=5)
        node_id, method, request, timeout, call = self.peers.calls[0]
        self.assertEqual((node_id, method, timeout), (3, "ReadJobOutput", 5 + 5.0))
        self.assertEqual((request.attempt, request.stdout_offset, request.wait_ms), (1, 5, 5000))
        answer = output_wire.read_response(
            OutputRead(
                (OutputPiece(STDOUT, b"hi", 5, 0, 1),), OutputCursor(1, 7, 0), JobStatus.RUNNING
            )
        )
        call.callback(answer)
        read = self.successResultOf(reading)
        self.assertEqual(
            (data(read.pieces), read.cursor, read.final), (b"hi", OutputCursor(1, 7), False)
        )

    def test_a_relayed_read_is_answered_here_and_never_passed_on(self):
        reading = self.router.read_output(JOB, OutputCursor(), wait=5, relayed=True)
        self.assertEqual(self.peers.calls, [])
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(reading).pieces, ())

    def test_a_relayed_read_of_a_job_not_applied_here_yet_waits_for_it(self):
        """The leader relays a read as soon as it has applied the job's assignment; this
        node applies it a moment later and answers then, not after the wait."""
        job_id = str(uuid.uuid4())
        reading = self.router.read_output(job_id, OutputCursor(), wait=5, relayed=True)
        self.assertNoResult(reading)
        job = Job(job_id, "x", 0, status=JobStatus.RUNNING, assigned_worker=2, attempts=1)
        self.table.jobs[job_id] = job
        self.outputs.job_changed("submitted", job)
        self.assertEqual(self.successResultOf(reading).status, JobStatus.RUNNING)
        self.outputs.open(job_id, 1).write(STDOUT, b"hi")
        read = self.successResultOf(self.router.read_output(job_id, OutputCursor(), 5, True))
        self.assertEqual(data(read.pieces), b"hi")
        self.assertEqual(self.peers.calls, [])

    def test_a_relayed_read_of_a_malformed_job_id_is_refused(self):
        self.failureResultOf(
            self.router.read_output("nope", OutputCursor(), 5, relayed=True), errors.InvalidArgument
        )

    def test_an_unreachable_worker_means_nothing_new_after_a_pause(self):
        reading = self.router.read_output(JOB, OutputCursor(), wait=5)
        self.peers.calls[0][-1].errback(RuntimeError("connection refused"))
        self.assertNoResult(reading)
        self.clock.advance(0.5)
        read = self.successResultOf(reading)
        self.assertEqual((read.pieces, read.final, read.status), ((), False, JobStatus.RUNNING))

    def test_a_finished_job_is_read_here(self):
        self.table.jobs[JOB] = Job(JOB, "x", 0, status=JobStatus.COMPLETED, attempts=1, output="o")
        read = self.successResultOf(self.router.read_output(JOB, OutputCursor(), wait=5))
        self.assertEqual((data(read.pieces), read.final), (b"o", True))
        self.assertEqual(self.peers.calls, [])

    def test_an_unknown_job_is_not_found(self):
        self.failureResultOf(
            self.router.read_output(str(uuid.uuid4()), OutputCursor(), 5), errors.NotFound
        )
