"""After a fault: wait (with generous deadlines) for the cluster to settle, then check
every invariant of `checks.py` on what the nodes and the jobs' run files say."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tests.chaos.checks import TERMINAL, check_runs, check_settled, check_tables
from tests.chaos.cluster import SETTLE_LEADER_SECONDS, ChaosCluster
from tests.chaos.workload import Workload
from tests.nodeproc import pause
from tests.processes import pids_with

SETTLE_SECONDS = 180
POLL_SECONDS = 0.5


@dataclass
class Verdict:
    """The checks after one scenario: violations (must be none) and what was seen."""

    violations: list[str] = field(default_factory=list)
    jobs: int = 0
    runs: int = 0
    requeued_jobs: int = 0
    late_results: int = 0
    gaps: list[float] = field(default_factory=list)
    settle_seconds: float = 0.0


async def _tables(chaos: ChaosCluster) -> dict[int, list[dict]]:
    tables = {}
    for node_id, node in chaos.nodes.items():
        answer = await node.rest("GET", "/api/jobs", timeout=30)
        if answer.status != 200:
            raise AssertionError(f"node {node_id}: GET /api/jobs answered {answer.status}")
        tables[node_id] = answer.body
    return tables


def _settled(tables: dict[int, list[dict]]) -> bool:
    first, *others = tables.values()
    if any(job["status"] not in TERMINAL for job in first):
        return False
    key = sorted(first, key=lambda job: job["id"])
    return all(sorted(table, key=lambda job: job["id"]) == key for table in others)


async def settle_and_check(
    chaos: ChaosCluster, workload: Workload, timeout: float = SETTLE_SECONDS
) -> Verdict:
    """Every node up and agreeing on a leader, every job finished and every table equal
    (or the deadline passed), no run of ours still alive: then the checks."""
    started = time.monotonic()
    verdict = Verdict()
    try:
        await chaos.wait_all_ready(SETTLE_LEADER_SECONDS)
        await chaos.leader(timeout=SETTLE_LEADER_SECONDS)
    except AssertionError as error:
        verdict.violations.append(f"the cluster did not settle on a leader: {error}")
        return verdict
    deadline = started + timeout
    tables: dict[int, list[dict]] = {}
    while True:
        try:
            tables = await _tables(chaos)
        except Exception as error:  # a busy node; ask again
            if time.monotonic() >= deadline:
                verdict.violations.append(f"the nodes' job tables could not be read: {error}")
                return verdict
        else:
            if _settled(tables) and not _live_runs(workload):
                break
            if time.monotonic() >= deadline:
                break
        await pause(POLL_SECONDS)
    verdict.settle_seconds = time.monotonic() - started
    _check(verdict, chaos, workload, tables)
    return verdict


def _live_runs(workload: Workload) -> list[int]:
    """Pids of the shells of our jobs that still run."""
    return pids_with(str(workload.directory))


def _check(
    verdict: Verdict, chaos: ChaosCluster, workload: Workload, tables: dict[int, list[dict]]
) -> None:
    verdict.violations += check_tables(tables, workload.acknowledged)
    for node_id, table in sorted(tables.items()):
        verdict.violations += [f"node {node_id}: {v}" for v in check_settled(table)]
    live = _live_runs(workload)
    if live:
        verdict.violations.append(f"runs still alive after the cluster settled: pids {live}")
    reference = tables[min(tables)]
    for entry in reference:
        job = workload.job_of(entry)
        if job is None:
            continue
        runs = job.runs()
        result = check_runs(entry, runs, chaos.node_of_pid, job.max_attempts)
        verdict.violations += result.violations
        verdict.gaps += result.gaps
        verdict.jobs += 1
        verdict.runs += len(runs)
        verdict.requeued_jobs += entry["attempts"] > 1
        verdict.late_results += sum(record["late"] for record in entry["attempt_history"])
