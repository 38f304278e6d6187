"""A job's output as a sequence of chunks and an end, whatever it is read from.

`job logs` prints such a sequence. Today it comes from a finished job's GetJobStatus
(`finished_output`); a source reading StreamJobOutput yields the same items for
`job logs -f`, and the printing stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import views
from jobsched.cli.outcome import FINAL_STATUSES
from jobsched.cli.output import Printer

STDOUT = "stdout"
STDERR = "stderr"


@dataclass(frozen=True)
class OutputChunk:
    """Part of one stream (`stdout`/`stderr`), starting `offset` characters into it."""

    stream: str
    data: str
    offset: int


@dataclass(frozen=True)
class OutputEnd:
    """The job is final: its status name and exit code (None when it has none)."""

    status: str
    exit_code: int | None


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


def print_output(
    printer: Printer, items: Iterator[OutputChunk | OutputEnd], streams: frozenset[str]
) -> OutputEnd | None:
    """Print the chunks of the chosen `streams` (stdout to stdout, stderr to stderr, or
    one JSON object per line); the end, if the job reached it."""
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
