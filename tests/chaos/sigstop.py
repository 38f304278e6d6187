"""The pause measurement of the long run: SIGSTOP the node process that runs a 12 s
job, as leader and as follower, for given spans (3 s, 8 s and 20 s against the default
5 s worker expiry), and measure from the job's ticks whether two runs of it ever
overlapped, and how far apart they were."""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field

from tests.chaos.checks import TERMINAL
from tests.chaos.scenarios import TAKEOVER_SECONDS, Chaos, table
from tests.chaos.settle import settle_and_check
from tests.nodeproc import pause
from tests.processes import pids_with

JOB_TICKS = 120  # about 12 s


@dataclass
class PauseTrial:
    role: str
    seconds: float
    node: int
    paused_for: float
    runs: int
    attempts: int
    status: str
    gaps: list[float]
    violations: list[str]


async def _entry(chaos: Chaos, job_id: str) -> dict | None:
    return next((job for job in await table(chaos) if job["id"] == job_id), None)


async def _put_on(chaos: Chaos, role: str, runner: int) -> None:
    """Make `runner` the leader (role leader) or a follower (role follower)."""
    leader = (await chaos.cluster.leader()).node_id
    if (role == "leader") == (leader == runner):
        return
    target = runner if role == "leader" else 0
    answer = await chaos.cluster.nodes[leader].rest(
        "POST", "/api/cluster/transfer-leader", {"target_node_id": target}, timeout=30
    )
    if answer.status != 200:
        raise AssertionError(f"transfer to {target or 'any'} failed: {answer.body}")
    others = [n for n in chaos.cluster.nodes if n != runner]
    await chaos.cluster.leader(among=[runner] if role == "leader" else others)


async def pause_trial(chaos: Chaos, role: str, seconds: float) -> PauseTrial:
    """One trial: a 12 s job runs on the node that will be paused, in the given role."""
    job = chaos.workload.new_job(max_attempts=3, ticks=JOB_TICKS)
    job_id = await chaos.workload.submit(chaos.healthy_nodes(), job, within=60)
    if job_id is None:
        raise AssertionError("the trial's job was not acknowledged")

    async def running():
        entry = await _entry(chaos, job_id)
        return entry if entry and entry["status"] == "running" else None

    runner = (await chaos.cluster.until(running, 60, "the job to run"))["assigned_worker"]
    await _put_on(chaos, role, runner)
    await chaos.cluster.until(job.runs, 30, "the job's first tick")
    chaos.cluster.pause(runner)
    stopped = time.monotonic()
    try:
        await pause(seconds)
    finally:
        chaos.cluster.resume(runner)
    paused_for = time.monotonic() - stopped

    async def finished():
        entry = await _entry(chaos, job_id)
        done = entry and entry["status"] in TERMINAL and not pids_with(str(job.path))
        return entry if done else None

    entry = await chaos.cluster.until(finished, TAKEOVER_SECONDS + 60, "the job to finish")
    verdict = await settle_and_check(chaos.cluster, chaos.workload)
    runs = job.runs()
    gaps = [(b.first_ns - a.last_ns) / 1e9 for a, b in itertools.pairwise(runs)]
    return PauseTrial(
        role,
        seconds,
        runner,
        paused_for,
        len(runs),
        entry["attempts"],
        entry["status"],
        gaps,
        verdict.violations,
    )


@dataclass
class PauseFigures:
    """The trials of one role and span, summed up."""

    role: str
    seconds: float
    trials: list[PauseTrial] = field(default_factory=list)

    def summary(self) -> dict:
        gaps = [gap for trial in self.trials for gap in trial.gaps]
        runs: dict[int, int] = {}
        for trial in self.trials:
            runs[trial.runs] = runs.get(trial.runs, 0) + 1
        return {
            "role": self.role,
            "pause_seconds": self.seconds,
            "trials": len(self.trials),
            "runs_per_job": {str(k): v for k, v in sorted(runs.items())},
            "overlapping_runs": sum(1 for gap in gaps if gap <= 0),
            "violations": sum(len(trial.violations) for trial in self.trials),
            "gap_min_s": round(min(gaps), 3) if gaps else None,
            "gap_median_s": round(statistics.median(gaps), 3) if gaps else None,
            "gap_max_s": round(max(gaps), 3) if gaps else None,
            "completed": sum(trial.status == "completed" for trial in self.trials),
        }
