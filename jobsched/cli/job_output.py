"""A job's output as a sequence of chunks and an end, whatever it is read from.

`job logs` prints such a sequence: from StreamJobOutput (`streamed_output`, followed
live with `-f`), or from a finished job's GetJobStatus (`finished_output`).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import views
from jobsched.cli.outcome import FINAL_STATUSES
from jobsched.cli.output import Printer

FINAL_STATUS_NAMES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
STDOUT = "stdout"
STDERR = "stderr"


@dataclass(frozen=True)
class OutputChunk:
    """Part of one stream (`stdout`/`stderr`), starting `offset` bytes into it."""

    stream: str
    data: str
    offset: int


@dataclass(frozen=True)
class OutputEnd:
    """The end of the output read: the job's status name then and its exit code (None
    when it has none); the job is over when the status is a final one."""

    status: str
    exit_code: int | None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUS_NAMES


def finished_output(job: pb.GetJobStatusResponse) -> Iterator[OutputChunk | OutputEnd]:
    """What a job holds once final: its stdout, its stderr, then the end (nothing before
    the job is final: GetJobStatus carries no output until then)."""
    if job.status not in FINAL_STATUSES:
        return
    if job.output:
        yield OutputChunk(STDOUT, job.output, 0)
    if job.error:
        yield OutputChunk(STDERR, job.error, 0)
    yield OutputEnd(
        views.status_name(job.status), job.exit_code if job.HasField("exit_code") else None
    )


def streamed_output(
    chunks: Iterable[pb.JobOutputChunk], notice: Callable[[str], None]
) -> Iterator[OutputChunk | OutputEnd]:
    """The chunks of StreamJobOutput as text (a character cut between two chunks is
    decoded whole; invalid UTF-8 replaced), then the end: the job's status when the
    stream ended (final once followed to the end).
    Missed bytes and a new attempt starting are told on `notice`."""
    decoders: dict[str, codecs.IncrementalDecoder] = {}
    attempt = 0
    for chunk in chunks:
        if chunk.final:
            exit_code = chunk.exit_code if chunk.HasField("exit_code") else None
            yield OutputEnd(views.status_name(chunk.status), exit_code)
            return
        if chunk.attempt != attempt:
            if attempt:
                notice(f"[attempt {chunk.attempt} started; its output follows]")
            attempt = chunk.attempt
            decoders.clear()
        if chunk.skipped:
            notice(f"[{chunk.skipped} bytes of {chunk.stream} skipped]")
        decoder = decoders.get(chunk.stream)
        if decoder is None or chunk.skipped:
            decoder = decoders[chunk.stream] = codecs.getincrementaldecoder("utf-8")("replace")
        text = decoder.decode(chunk.data)
        if text:
            yield OutputChunk(chunk.stream, text, chunk.offset)


def print_output(
    printer: Printer, items: Iterator[OutputChunk | OutputEnd], streams: frozenset[str]
) -> OutputEnd | None:
    """Print the chunks of the chosen `streams` (stdout to stdout, stderr to stderr, or
    one JSON object per line) and, in JSON, the end; returns the end (None when the
    items stopped without one)."""
    for item in items:
        if isinstance(item, OutputEnd):
            if printer.json_mode:
                printer.json_line(views.output_end(item.status, item.exit_code))
            return item
        if item.stream not in streams:
            continue
        if printer.json_mode:
            printer.json_line(views.output_chunk(item.stream, item.data, item.offset))
        else:
            printer.raw(item.data, to_stderr=item.stream == STDERR)
    return None
