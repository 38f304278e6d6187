"""The short chaos run of `make test`: two real 3-node clusters (process executor,
peers through the fault proxy), one in memory and one with `--data-dir`, each put
through four faults while busy with jobs that log every run (`runs.py`); after each
fault the cluster must settle and every invariant of `checks.py` hold. The long run is
`python -m tests.chaos.long` (docs/testing.md)."""

from __future__ import annotations

import random
from pathlib import Path

from twisted.trial import unittest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.scenarios import SCENARIOS, Chaos
from tests.chaos.settle import settle_and_check
from tests.chaos.workload import Workload

WORKER_EXPIRY = 2  # seconds: short, so that faults past it stay short
TICKS = 60  # a job runs about 6 s: killed runs would outlive the takeover


class ShortChaosTests(unittest.TestCase):
    """Each test owns its cluster and proxy, killed by PID in cleanup. A failure names
    the seed, the scenario and every violation found."""

    timeout = 600

    async def run_scenarios(self, seed: int, durable: bool, names: list[str]) -> None:
        lines: list[str] = []
        try:
            cluster = await ChaosCluster.start(self, durable=durable, worker_expiry=WORKER_EXPIRY)
            runs_dir = Path(self.mktemp()).resolve()
            runs_dir.mkdir(parents=True)
            chaos = Chaos(
                cluster,
                Workload(runs_dir, TICKS, label=f"seed{seed}"),
                random.Random(seed),
                WORKER_EXPIRY,
                say=lines.append,
            )
            for name in names:
                chaos.say(f"scenario {name}")
                await SCENARIOS[name](chaos)
                verdict = await settle_and_check(cluster, chaos.workload)
                chaos.say(
                    f"  settled in {verdict.settle_seconds:.1f}s: {verdict.jobs} jobs, "
                    f"{verdict.runs} runs, {verdict.requeued_jobs} requeued"
                )
                if verdict.violations:
                    raise AssertionError("violations:\n" + "\n".join(verdict.violations))
        except Exception as error:
            self.fail(
                f"chaos seed {seed} ({'durable' if durable else 'in memory'}), "
                f"scenarios {names}:\n" + "\n".join(lines) + f"\n{type(error).__name__}: {error}"
            )

    async def test_in_memory_cluster(self):
        await self.run_scenarios(
            11,
            durable=False,
            names=[
                "kill-leader-restart-at-once",
                "pause-leader-long",
                "pause-follower-short",
                "cut-follower",
            ],
        )

    async def test_durable_cluster(self):
        await self.run_scenarios(
            12,
            durable=True,
            names=[
                "kill-leader-restart-later",
                "pause-follower-long",
                "pause-leader-short",
                "cut-leader",
            ],
        )
