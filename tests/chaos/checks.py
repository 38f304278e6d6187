"""The invariants a chaos run checks once the cluster has settled. Pure functions over
what the nodes answer (GET /api/jobs of every node) and what the jobs wrote
(`runs.py`); each returns the violations it finds, as sentences."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.chaos.runs import Run

TERMINAL = ("completed", "failed", "cancelled")
# The attempt history is in whole milliseconds of the same host clock as the ticks.
CLOCK_ROUNDING_MS = 1.0
# How long past the end of its attempt a run's last line may come: an attempt ends when
# its result is taken, or when it is declared lost (by then its run must be dead:
# docs/reliability.md, "The arithmetic"); a tick is written before that, or never.
OUTLIVED_TOLERANCE_MS = 100.0


def check_tables(tables: Mapping[int, list[dict]], acknowledged: Iterable[str]) -> list[str]:
    """Every acknowledged job is in every node's table exactly once, and the tables of
    all nodes are identical."""
    violations = []
    acknowledged = set(acknowledged)
    for node_id, table in sorted(tables.items()):
        counts = Counter(job["id"] for job in table)
        for job_id, count in sorted(counts.items()):
            if count > 1:
                violations.append(f"job {job_id} is {count} times in node {node_id}'s table")
        for job_id in sorted(acknowledged - set(counts)):
            violations.append(f"acknowledged job {job_id} is missing from node {node_id}'s table")
    by_id = {node_id: {job["id"]: job for job in table} for node_id, table in tables.items()}
    (first, reference), *others = sorted(by_id.items())
    for node_id, jobs in others:
        for job_id in sorted(set(reference) | set(jobs)):
            mine, theirs = reference.get(job_id), jobs.get(job_id)
            if mine != theirs:
                violations.append(
                    f"nodes {first} and {node_id} differ on job {job_id}: "
                    f"{_difference(mine, theirs)}"
                )
    return violations


def _difference(a: dict | None, b: dict | None) -> str:
    if a is None or b is None:
        return "present on one only"
    keys = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
    return ", ".join(f"{key} {a.get(key)!r} vs {b.get(key)!r}" for key in keys)


def check_settled(table: list[dict]) -> list[str]:
    """Nothing is left pending or running once the cluster has settled."""
    return [
        f"job {job['id']} is still {job['status']} (attempt {job['attempts']}, "
        f"worker {job['assigned_worker']})"
        for job in table
        if job["status"] not in TERMINAL
    ]


@dataclass
class RunCheck:
    """What one job's runs showed: violations, and the gaps between consecutive runs
    (seconds from one run's last line to the next run's first)."""

    violations: list[str]
    gaps: list[float]


def check_runs(
    job: dict, runs: list[Run], node_of_pid: Mapping[int, int], max_attempts: int
) -> RunCheck:
    """One job's runs against its attempt history: no two runs overlap in time, each
    run belongs to an attempt on the node that ran it, no attempt ran twice, no run went
    on after its attempt ended, a job of one attempt ran at most once, and a completed
    job's last attempt ran to its end."""
    name = f"job {job['id']}"
    violations = []
    gaps = []
    for earlier, later in itertools.pairwise(runs):
        gaps.append((later.first_ns - earlier.last_ns) / 1e9)
    for n, run in enumerate(runs):
        for other in runs[n + 1 :]:
            if run.overlaps(other):
                overlap = (min(run.last_ns, other.last_ns) - other.first_ns) / 1e9
                violations.append(
                    f"{name}: runs {run.token} (node {node_of_pid.get(run.node_pid)}) and "
                    f"{other.token} (node {node_of_pid.get(other.node_pid)}) overlap by "
                    f"{overlap:.3f}s"
                )
    if max_attempts == 1 and len(runs) > 1:
        violations.append(f"{name}: max_attempts 1 but it ran {len(runs)} times")
    runs_of_attempt: dict[int, list[str]] = {}
    for run in runs:
        node_id = node_of_pid.get(run.node_pid)
        if node_id is None:
            violations.append(f"{name}: run {run.token} by an unknown process {run.node_pid}")
            continue
        record = attempt_of(job["attempt_history"], node_id, run)
        if record is None:
            violations.append(
                f"{name}: run {run.token} on node {node_id} belongs to no attempt there"
            )
            continue
        runs_of_attempt.setdefault(record["attempt"], []).append(run.token)
        finished = record["finished_at_ms"]
        if finished is not None and run.last_ms > finished + OUTLIVED_TOLERANCE_MS:
            violations.append(
                f"{name}: run {run.token} on node {node_id} outlived its attempt "
                f"{record['attempt']} ({record['outcome']}) by "
                f"{(run.last_ms - finished) / 1000:.3f}s"
            )
    for attempt, tokens in sorted(runs_of_attempt.items()):
        if len(tokens) > 1:
            violations.append(f"{name}: attempt {attempt} ran {len(tokens)} times ({tokens})")
    if job["status"] == "completed":
        last = job["attempt_history"][-1]["attempt"] if job["attempt_history"] else None
        finished = [
            run
            for run in runs
            if run.ended and run.token in runs_of_attempt.get(last, [])  # type: ignore[arg-type]
        ]
        if not finished:
            violations.append(f"{name}: completed, but its attempt {last} never ran to its end")
    return RunCheck(violations, gaps)


def attempt_of(history: list[dict], node_id: int, run: Run) -> dict | None:
    """The attempt a run on `node_id` belongs to: the latest attempt given to that node
    that started (was assigned) before the run's first line; its record."""
    candidates = [
        record
        for record in history
        if record["worker"] == node_id
        and record["started_at_ms"] is not None
        and record["started_at_ms"] <= run.first_ms + CLOCK_ROUNDING_MS
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda record: record["started_at_ms"])
