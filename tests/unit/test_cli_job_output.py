"""`job logs`: StreamJobOutput's chunks as text and an end (job_output.streamed_output)."""

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli.job_output import OutputChunk, OutputEnd, streamed_output


def chunk(stream, data, offset, attempt=1, skipped=0):
    return pb.JobOutputChunk(
        stream=stream, data=data, offset=offset, attempt=attempt, skipped=skipped
    )


class StreamedOutputTests(unittest.TestCase):
    def setUp(self):
        self.notices = []

    def items(self, *chunks):
        return list(streamed_output(chunks, self.notices.append))

    def test_a_character_cut_between_chunks_is_decoded_whole(self):
        euro = "€".encode()
        items = self.items(chunk("stdout", b"a" + euro[:1], 0), chunk("stdout", euro[1:], 2))
        self.assertEqual(items, [OutputChunk("stdout", "a", 0), OutputChunk("stdout", "€", 2)])

    def test_invalid_utf8_is_replaced(self):
        items = self.items(chunk("stderr", b"\xff!", 0), pb.JobOutputChunk(final=True))
        self.assertEqual(items[0], OutputChunk("stderr", "\ufffd!", 0))

    def test_the_final_chunk_is_the_end_with_its_status_and_code(self):
        final = pb.JobOutputChunk(final=True, status=pb.JOB_STATUS_FAILED, exit_code=3)
        self.assertEqual(self.items(final), [OutputEnd("FAILED", 3)])
        self.assertTrue(OutputEnd("FAILED", 3).is_final)
        running = pb.JobOutputChunk(final=True, status=pb.JOB_STATUS_RUNNING)
        end = self.items(running)[0]
        self.assertEqual((end.exit_code, end.is_final), (None, False))

    def test_skipped_bytes_and_a_new_attempt_are_told(self):
        self.items(
            chunk("stdout", b"x", 10, skipped=10),
            chunk("stdout", b"again", 0, attempt=2),
        )
        self.assertEqual(
            self.notices,
            ["[10 bytes of stdout skipped]", "[attempt 2 started; its output follows]"],
        )
