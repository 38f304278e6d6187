"""The Raft simulation suite of DESIGN.md §4, over many seeds (tests/simulation.py).

`--sim-seeds` and `--sim-steps` scale it (defaults 500 and 2000); `--seed N` runs only
seed N, which replays a reported failure exactly. Planted bugs show that it can fail.
"""

from __future__ import annotations

import traceback

import pytest

from jobsched.raft.core import FOLLOWER, LEADER, RaftCore
from jobsched.raft.messages import AppendEntriesRequest, VoteRequest
from tests.simulation import InvariantViolation, Simulation, Stats, cluster_size, run

CHUNK = 50
PLANTED_SEEDS = 100
PLANTED_STEPS = 2000
MIN_COMMITTED_SHARE = 0.6
CONVERGE_SEEDS = 50
CONVERGE_SECONDS = 30


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Split the seeds into chunks of CHUNK, one test each (or just `--seed N`)."""
    if "seeds" not in metafunc.fixturenames:
        return
    seed = metafunc.config.getoption("seed")
    if seed is not None:
        chunks = [range(seed, seed + 1)]
    else:
        total = metafunc.config.getoption("sim_seeds")
        chunks = [range(start, min(start + CHUNK, total)) for start in range(0, total, CHUNK)]
    metafunc.parametrize("seeds", chunks, ids=[f"seeds{c.start}-{c.stop - 1}" for c in chunks])


@pytest.fixture
def steps(request: pytest.FixtureRequest) -> int:
    return request.config.getoption("sim_steps")


def replay_command(seed: int, steps: int) -> str:
    return (
        f"cd tests && ../.venv/bin/pytest -q "
        f"unit/test_simulation.py::test_raft_invariants_hold --seed {seed} "
        f"--sim-steps {steps}"
    )


def test_raft_invariants_hold(seeds: range, steps: int) -> None:
    total = Stats()
    idle: list[int] = []
    for seed in seeds:
        failure = None
        try:
            stats = run(seed, steps)
        except InvariantViolation as violation:
            failure = str(violation)
        except Exception:  # the core itself broke: report the seed too
            failure = f"seed {seed}: {traceback.format_exc()}"
        if failure is not None:
            pytest.fail(f"{failure}\nreplay: {replay_command(seed, steps)}", pytrace=False)
        if stats.elections == 0 or stats.committed == 0:
            idle.append(seed)
        total += stats
    if len(seeds) < 10 or steps < 1000:
        return  # too few or too short runs to judge progress
    # The suite must not pass by doing nothing: every seed elects and commits, and
    # most commands handed to a leader get committed despite the faults.
    assert not idle, f"seeds {idle} elected no leader or committed nothing"
    assert total.committed >= MIN_COMMITTED_SHARE * total.accepted, total
    assert total.crashes and total.partitions and total.dropped and total.snapshots_installed


def test_cluster_converges_once_faults_stop(steps: int) -> None:
    """Liveness: after the faults, a healed cluster commits a new command everywhere."""
    stuck = []
    for seed in range(CONVERGE_SEEDS):
        sim = Simulation(seed, cluster_size(seed))
        sim.run(steps)
        index = None
        for _ in range(CONVERGE_SECONDS):
            sim.settle(1.0)
            index = index or sim.propose()
            applied = sim.applied()
            if index and len(applied) == 1 and next(iter(applied))[0] >= index:
                break
        else:
            stuck.append((seed, index, sorted(applied)))
    assert not stuck, f"(seed, index proposed, applied) that did not converge: {stuck}"


# ---------------------------------------------------------------- planted bugs


class VotesTwice(RaftCore):
    """Planted bug: forgets its vote when another candidate of the same term asks."""

    def receive_request(self, msg, now):
        if isinstance(msg, VoteRequest) and not msg.pre_vote and msg.term == self.term:
            self.voted_for = 0
        return super().receive_request(msg, now)


class CommitsUnmatched(RaftCore):
    """Planted bug: a follower takes the leader's commit index for its whole log,
    without knowing that its log matches the leader's that far."""

    def receive_request(self, msg, now):
        response = super().receive_request(msg, now)
        if (
            isinstance(msg, AppendEntriesRequest)
            and msg.term == self.term
            and self.role == FOLLOWER
        ):
            self.commit_index = max(self.commit_index, min(msg.leader_commit, self.log.last_index))
        return response


class CountsItselfEarly(RaftCore):
    """Planted bug: the leader counts its own entries before they are durable."""

    def take_ready(self):
        ready = super().take_ready()
        if ready is not None and ready.has_writes and self.role == LEADER:
            self.persisted(ready.seq)
        return ready


@pytest.mark.parametrize(
    "core_factory,symptoms",
    [
        (VotesTwice, ("two leaders in term",)),
        (CommitsUnmatched, ("applied (term, command)",)),
        (CountsItselfEarly, ("applied (term, command)", "lacks committed entry")),
    ],
)
def test_planted_bug_is_found(core_factory, symptoms) -> None:
    for seed in range(PLANTED_SEEDS):
        try:
            run(seed, PLANTED_STEPS, core_factory=core_factory)
        except InvariantViolation as violation:
            assert any(s in violation.message for s in symptoms), violation
            return
    pytest.fail(f"{core_factory.__name__}: no violation in {PLANTED_SEEDS} seeds")
