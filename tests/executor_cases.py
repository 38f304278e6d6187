"""The behaviour table every executor must pass (BEHAVIOUR.md §5, result rules).

Shared by tests/unit/test_process_executor.py and
tests/integration/test_docker_executor.py so both executors are held to one table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from unittest import TestCase

from jobsched.jobs.model import JobResult, JobSpec, JobStatus

DEFAULT_CAP = 65536


@dataclass(frozen=True)
class Case:
    """One command and the result it must give.

    `error` is compared exactly unless it is None; `error_contains` must appear in it.
    """

    command: str
    status: JobStatus
    output: str
    exit_code: int | None
    error: str | None = ""
    error_contains: str = ""
    max_output_bytes: int = DEFAULT_CAP
    truncated: bool = False


def _lines(*items: object) -> str:
    return "".join(f"{item}\n" for item in items)


CASES: dict[str, Case] = {
    "echo": Case("echo hello", JobStatus.COMPLETED, "hello\n", 0),
    "empty-output": Case("true", JobStatus.COMPLETED, "", 0),
    "seq-1000": Case("seq 1 1000", JobStatus.COMPLETED, _lines(*range(1, 1001)), 0),
    "exit-3": Case("exit 3", JobStatus.FAILED, "", 3),
    "stderr-on-failure": Case(
        "echo partial; echo bad >&2; exit 2", JobStatus.FAILED, "partial\n", 2, error="bad\n"
    ),
    "stderr-on-success": Case("echo oops >&2", JobStatus.COMPLETED, "", 0, error="oops\n"),
    "command-not-found": Case(
        "no-such-command-jobsched",
        JobStatus.FAILED,
        "",
        127,
        error=None,
        error_contains="not found",
    ),
    "multi-line": Case(
        "printf 'one\\ntwo\\nthree\\n'", JobStatus.COMPLETED, "one\ntwo\nthree\n", 0
    ),
    "single-quotes-literal": Case("echo 'hello $USER'", JobStatus.COMPLETED, "hello $USER\n", 0),
    "pipe": Case("echo 'hello world' | wc -w", JobStatus.COMPLETED, "2\n", 0),
    "invalid-utf8-replaced": Case(
        "printf 'caf\\303\\251 \\377!'", JobStatus.COMPLETED, "caf\u00e9 \ufffd!", 0
    ),
    "output-capped": Case(
        "seq 1 10000",
        JobStatus.COMPLETED,
        _lines(*range(1, 10001))[:1000],
        0,
        max_output_bytes=1000,
        truncated=True,
    ),
    "error-capped": Case(
        "seq 1 10000 >&2",
        JobStatus.COMPLETED,
        "",
        0,
        error=_lines(*range(1, 10001))[:1000],
        max_output_bytes=1000,
        truncated=True,
    ),
    "large-output-drained": Case(
        "yes | head -c 5000000",
        JobStatus.COMPLETED,
        "y\n" * 500,
        0,
        max_output_bytes=1000,
        truncated=True,
    ),
}


def new_spec(command: str, timeout_seconds: int = 30, image: str = "") -> JobSpec:
    return JobSpec(
        job_id=str(uuid.uuid4()), command=command, image=image, timeout_seconds=timeout_seconds
    )


def check_result(test: TestCase, result: JobResult, case: Case) -> None:
    """Assert, through `test`, that `result` is what `case` promises, plus the invariants
    of every result."""
    test.assertEqual(result.status, case.status, result)
    test.assertEqual(result.exit_code, case.exit_code, result)
    test.assertEqual(result.output, case.output)
    if case.error is not None:
        test.assertEqual(result.error, case.error)
    test.assertIn(case.error_contains, result.error)
    test.assertEqual(result.output_truncated, case.truncated)
    test.assertIs(result.timed_out, False)  # only a timeout sets it, never an exit code
    test.assertIsNotNone(result.started_at_ms)
    test.assertLessEqual(result.started_at_ms, result.completed_at_ms)
