"""The faults of a chaos run, each done to a cluster busy with jobs, and how a run of
several goes. A scenario loads the cluster (every node runs jobs, one of them with
`max_attempts` 1), does its fault to the leader or to a follower that runs jobs,
submits more jobs while the fault lasts, ends the fault, and leaves the checks to
`settle.py`."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from jobsched.worker.fence import FENCE_MARGIN_SECONDS
from tests.chaos.cluster import ChaosCluster
from tests.chaos.workload import Workload
from tests.nodeproc import pause

TAKEOVER_SECONDS = 90  # generous: the cores are shared
DRAINED_ELECTION_SECONDS = 30  # a leader after a drain and a kill (perhaps the drained node)
LOAD_SECONDS = 60


@dataclass
class Chaos:
    """What a scenario works with, and what it tells about itself."""

    cluster: ChaosCluster
    workload: Workload
    rng: random.Random
    worker_expiry: float
    jobs_per_load: int = 6
    jobs_during_fault: int = 2
    # How long a pause or a cut still lasts once the node's jobs run elsewhere: the
    # paused node's runs (if the fence failed) then overlap the new ones for that long.
    hold_after_takeover: Callable[[Chaos], float] = lambda chaos: chaos.worker_expiry / 2
    say: Callable[[str], None] = lambda line: None
    counts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def healthy_nodes(self):
        return [self.cluster.nodes[node_id] for node_id in self.cluster.healthy()]


async def table(chaos: Chaos) -> list[dict]:
    """The job table as a healthy node sees it."""
    for node in chaos.healthy_nodes():
        try:
            answer = await node.rest("GET", "/api/jobs", timeout=30)
        except Exception:  # try the next node
            continue
        if answer.status == 200:
            return answer.body
    raise AssertionError("no healthy node answered GET /api/jobs")


def running_on(entries: list[dict], node_id: int) -> dict[str, int]:
    """{job id: attempt} of the jobs the table says run on `node_id`."""
    return {
        job["id"]: job["attempts"]
        for job in entries
        if job["status"] == "running" and job["assigned_worker"] == node_id
    }


async def load(chaos: Chaos) -> list[dict]:
    """Submit a batch (the first job with max_attempts 1) and wait until all of it that
    was acknowledged runs; the table then."""
    nodes = chaos.healthy_nodes()
    ids = []
    for n in range(chaos.jobs_per_load):
        job = chaos.workload.new_job(max_attempts=1 if n == 0 else chaos.rng.randint(2, 4))
        job_id = await chaos.workload.submit(nodes, job, within=30)
        if job_id is not None:
            ids.append(job_id)

    async def all_running():
        entries = await table(chaos)
        states = {job["id"]: job["status"] for job in entries}
        return entries if all(states.get(i) not in (None, "pending") for i in ids) else None

    return await chaos.cluster.until(all_running, LOAD_SECONDS, "the batch to run")


async def submit_during(chaos: Chaos) -> None:
    nodes = chaos.healthy_nodes()
    for _ in range(chaos.jobs_during_fault):
        await chaos.workload.submit(nodes, chaos.workload.new_job(chaos.rng.randint(1, 3)), 15)


async def taken_back(chaos: Chaos, node_id: int, at_fault: dict[str, int]) -> None:
    """Wait until no job that ran on `node_id` when the fault began still runs there as
    the same attempt, or waits to run again: each is finished or runs elsewhere."""

    async def gone():
        for job in await table(chaos):
            attempt = at_fault.get(job["id"])
            if attempt is None:
                continue
            if job["status"] == "pending":
                return False
            if (job["status"], job["assigned_worker"], job["attempts"]) == (
                "running",
                node_id,
                attempt,
            ):
                return False
        return True

    timeout = chaos.worker_expiry + FENCE_MARGIN_SECONDS + TAKEOVER_SECONDS
    await chaos.cluster.until(gone, timeout, f"node {node_id}'s jobs to be taken back")


async def pick(chaos: Chaos, role: str) -> tuple[int, dict[str, int]]:
    """The leader, or a follower that runs jobs; and the jobs running on it."""
    entries = await load(chaos)
    leader = (await chaos.cluster.leader()).node_id
    if role == "leader":
        return leader, running_on(entries, leader)
    followers = [n for n in chaos.cluster.healthy() if n != leader and running_on(entries, n)]
    target = chaos.rng.choice(followers or [n for n in chaos.cluster.healthy() if n != leader])
    return target, running_on(entries, target)


async def kill(chaos: Chaos, role: str, restart_at_once: bool) -> None:
    """SIGKILL the node; restart it at once, or once its jobs were taken back."""
    target, jobs = await pick(chaos, role)
    chaos.say(f"kill {role} {target} ({len(jobs)} jobs), restart at once: {restart_at_once}")
    chaos.cluster.kill(target)
    chaos.counts["kills"] += 1
    await chaos.cluster.leader(timeout=TAKEOVER_SECONDS)
    await submit_during(chaos)
    if restart_at_once:
        await chaos.cluster.restart(target)
        await taken_back(chaos, target, jobs)
    else:
        await taken_back(chaos, target, jobs)
        await chaos.cluster.restart(target)
    chaos.counts["restarts"] += 1


async def pause_node(chaos: Chaos, role: str, seconds: float | None) -> None:
    """SIGSTOP the node process for `seconds`, or (None) until its jobs were taken back
    by a leader that is not it and a while longer; then SIGCONT."""
    target, jobs = await pick(chaos, role)
    what = f"{seconds:.1f}s" if seconds is not None else "past the takeover"
    chaos.say(f"pause {role} {target} ({len(jobs)} jobs) for {what}")
    chaos.cluster.pause(target)
    chaos.counts["pauses"] += 1
    stopped = time.monotonic()
    try:
        if seconds is not None:
            await pause(seconds)
        else:
            if role == "leader":
                await chaos.cluster.leader(timeout=TAKEOVER_SECONDS)
            await submit_during(chaos)
            await taken_back(chaos, target, jobs)
            await pause(chaos.hold_after_takeover(chaos))
    finally:
        chaos.cluster.resume(target)
    chaos.say(f"  node {target} continued after {time.monotonic() - stopped:.1f}s")


async def cut_off(chaos: Chaos, role: str, seconds: float | None = None) -> None:
    """Cut the node off from its peers for `seconds`, or (None) until its jobs were
    taken back by a leader that is not it and a while longer; heal."""
    target, jobs = await pick(chaos, role)
    what = f"{seconds:.1f}s" if seconds is not None else "past the takeover"
    chaos.say(f"cut off {role} {target} ({len(jobs)} jobs) for {what}")
    await chaos.cluster.cut(target)
    chaos.counts["partitions"] += 1
    cut_at = time.monotonic()
    try:
        if seconds is not None:
            await pause(seconds)
        else:
            await chaos.cluster.leader(timeout=TAKEOVER_SECONDS)
            await submit_during(chaos)
            await taken_back(chaos, target, jobs)
            await pause(chaos.hold_after_takeover(chaos))
    finally:
        await chaos.cluster.heal()
    chaos.say(f"  node {target} healed after {time.monotonic() - cut_at:.1f}s")


async def drain_then_elections(chaos: Chaos, rounds: int = 3) -> None:
    """Drain a follower, then kill the leader (restarting it once another leads) until
    the drained node wins an election (as a last resort) or `rounds` elections went to
    others; note what happened, and restart the drained node (draining lasts until
    then). Every kill must be followed by a leader."""
    await load(chaos)
    leader = (await chaos.cluster.leader()).node_id
    drained = chaos.rng.choice([n for n in chaos.cluster.healthy() if n != leader])
    node = chaos.cluster.nodes[drained]
    answer = await node.rest("POST", "/api/nodes/self/drain", timeout=120)
    chaos.say(f"drain node {drained}: {answer.status} {answer.body.get('message')}")
    chaos.counts["drains"] += 1
    for _ in range(rounds):
        chaos.cluster.kill(leader)
        chaos.counts["kills"] += 1
        try:
            new_leader = (await chaos.cluster.leader(timeout=DRAINED_ELECTION_SECONDS)).node_id
        except AssertionError:
            views = await chaos.cluster.views()
            raise AssertionError(
                f"no leader for {DRAINED_ELECTION_SECONDS}s after node {leader} was killed, "
                f"with node {drained} drained: "
                + "; ".join(f"node {n}: {_raft_state(v)}" for n, v in sorted(views.items()))
            ) from None
        await chaos.cluster.restart(leader)
        chaos.counts["restarts"] += 1
        chaos.counts["elections after a drain"] += 1
        if new_leader == drained:
            chaos.counts["elections won by the drained node"] += 1
            refused = await node.rest("POST", "/api/jobs", {"command": "true"}, timeout=30)
            chaos.notes.append(
                f"drained node {drained} won an election (after node {leader} was killed); "
                f"a submission to it answered {refused.status} {refused.body}"
            )
            chaos.say(chaos.notes[-1])
            break
        leader = new_leader
    chaos.cluster.kill(drained)
    chaos.counts["kills"] += 1
    await chaos.cluster.restart(drained)
    chaos.counts["restarts"] += 1


def _raft_state(view: dict) -> str:
    return (
        f"{view['role']} in term {view['current_term']}, log {view['log_length']}, "
        f"commit {view['commit_index']}"
    )


Scenario = Callable[[Chaos], Awaitable[None]]


def short_pause(chaos: Chaos) -> float:
    """Well inside the expiry: the lease holds (heartbeats come every expiry / 2.5)."""
    return chaos.worker_expiry * 0.4


SCENARIOS: dict[str, Scenario] = {
    "kill-leader-restart-at-once": lambda c: kill(c, "leader", True),
    "kill-leader-restart-later": lambda c: kill(c, "leader", False),
    "kill-follower-restart-later": lambda c: kill(c, "follower", False),
    "pause-leader-long": lambda c: pause_node(c, "leader", None),
    "pause-follower-long": lambda c: pause_node(c, "follower", None),
    "pause-leader-short": lambda c: pause_node(c, "leader", short_pause(c)),
    "pause-follower-short": lambda c: pause_node(c, "follower", short_pause(c)),
    "cut-leader": lambda c: cut_off(c, "leader"),
    "cut-follower": lambda c: cut_off(c, "follower"),
}


def random_span(chaos: Chaos) -> float:
    """From well inside the expiry to well past the leader's takeover."""
    return chaos.rng.uniform(0.2, 3.0) * chaos.worker_expiry


LONG_SCENARIOS: dict[str, Scenario] = {
    **SCENARIOS,
    "pause-leader-random": lambda c: pause_node(c, "leader", random_span(c)),
    "pause-follower-random": lambda c: pause_node(c, "follower", random_span(c)),
    "cut-leader-random": lambda c: cut_off(c, "leader", random_span(c)),
    "cut-follower-random": lambda c: cut_off(c, "follower", random_span(c)),
    "drain-then-elections": drain_then_elections,
}
