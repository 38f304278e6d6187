"""The long chaos run, by command:

    python -m tests.chaos.long --minutes 10            (make chaos; MINUTES=n)

Fresh 3-node clusters (in memory or durable, worker expiry 2 or 3 s) go through random
faults from `scenarios.LONG_SCENARIOS` — kills with restarts, pauses and cuts of the
leader and of followers, for fixed or random spans, a drained node and the elections
after it — with every invariant checked after each fault, until the minutes are up.
Then the pause measurement (`sigstop.py`): a 12 s job's node SIGSTOPped for 3, 8 and
20 s, `--repeats` times each as leader and as follower, at the default 5 s expiry.

It prints what it does, and at the end a JSON report (also written to --report); the
exit status is 1 if any invariant was violated (the nodes' logs are then kept).
`--seed` replays the choices of a run (not its timings). Every process it starts is
killed by PID when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from twisted.internet import defer, task

from tests.chaos.cluster import ChaosCluster
from tests.chaos.scenarios import LONG_SCENARIOS, Chaos
from tests.chaos.settle import settle_and_check
from tests.chaos.sigstop import PauseFigures, pause_trial
from tests.chaos.workload import Workload

SCENARIOS_PER_CLUSTER = (4, 8)
EXPIRIES = (2, 3)
CHAOS_TICKS = (20, 60)  # a job runs 2 to 6 s
MEASURED_EXPIRY = 5
PAUSE_SPANS = (3, 8, 20)


class Scope:
    """Owns clusters outside trial as a TestCase would: scratch directories and
    cleanups (run last first; on reactor shutdown too, so Ctrl-C leaves nothing)."""

    def __init__(self, base: Path, reactor) -> None:
        self._base = base
        self._made = 0
        self._cleanups: list = []
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self._on_shutdown)
        self._reactor = reactor

    def mktemp(self) -> str:
        self._made += 1
        return str(self._base / f"{self._made}")

    def addCleanup(self, function, *args, **kwargs) -> None:  # TestCase's name
        self._cleanups.append((function, args, kwargs))

    async def close(self) -> None:
        self._reactor.removeSystemEventTrigger(self._trigger)
        while self._cleanups:
            function, args, kwargs = self._cleanups.pop()
            try:
                result = function(*args, **kwargs)
                if isinstance(result, defer.Deferred) or inspect.isawaitable(result):
                    await result
            except Exception as error:
                print(f"cleanup {function!r} failed: {error}", flush=True)

    def _on_shutdown(self) -> None:
        while self._cleanups:
            function, args, kwargs = self._cleanups.pop()
            try:
                function(*args, **kwargs)
            except Exception as error:
                print(f"cleanup {function!r} failed: {error}", flush=True)


class LongRun:
    def __init__(self, reactor, args: argparse.Namespace, seed: int, base: Path) -> None:
        self.reactor = reactor
        self.args = args
        self.seed = seed
        self.rng = random.Random(seed)
        self.base = base
        self.started = time.monotonic()
        self.counts: Counter = Counter()
        self.violations: list[str] = []
        self.found: set[str] = set()
        self.notes: list[str] = []
        self.scenarios_run: Counter = Counter()
        self.jobs = 0
        self.runs = 0
        self.requeued = 0
        self.acknowledged = 0
        self.unacknowledged = 0
        self.pause_figures: dict[tuple, PauseFigures] = {}

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {line}", flush=True)

    async def chaos_phase(self) -> None:
        deadline = self.started + self.args.minutes * 60
        number = 0
        while time.monotonic() < deadline:
            number += 1
            await self.one_cluster(number, deadline)

    async def one_cluster(self, number: int, deadline: float) -> None:
        durable = self.rng.random() < 0.5
        expiry = self.rng.choice(EXPIRIES)
        planned = self.rng.randint(*SCENARIOS_PER_CLUSTER)
        scope = Scope(self.base / f"cluster{number}", self.reactor)
        self.say(
            f"cluster {number}: {'durable' if durable else 'in memory'}, worker expiry "
            f"{expiry}s, up to {planned} scenarios"
        )
        self.counts["clusters"] += 1
        chaos = verdict = None
        try:
            cluster = await ChaosCluster.start(scope, durable=durable, worker_expiry=expiry)
            runs_dir = Path(scope.mktemp())
            runs_dir.mkdir(parents=True)
            ticks = self.rng.randint(*CHAOS_TICKS)
            workload = Workload(runs_dir, ticks, label=f"c{number}")
            chaos = Chaos(cluster, workload, self.rng, expiry, say=self.say)
            chaos.jobs_per_load = self.rng.randint(3, 9)
            chaos.hold_after_takeover = lambda c: c.rng.uniform(0, c.worker_expiry)
            for step in range(planned):
                if time.monotonic() >= deadline:
                    break
                name = self.rng.choice(self.args.scenarios)
                self.say(f"cluster {number} step {step + 1}: {name}")
                self.scenarios_run[name] += 1
                await LONG_SCENARIOS[name](chaos)
                verdict = await settle_and_check(cluster, workload)
                self.say(
                    f"  settled in {verdict.settle_seconds:.1f}s: {verdict.jobs} jobs, "
                    f"{verdict.runs} runs, {verdict.requeued_jobs} requeued, "
                    f"{len(verdict.violations)} violations"
                )
                self.record(verdict.violations, f"cluster {number} step {step + 1} ({name})")
        except Exception as error:
            self.record([f"{type(error).__name__}: {error}"], f"cluster {number}")
        finally:
            if verdict is not None:  # the checks of the last step cover every job
                self.jobs += verdict.jobs
                self.runs += verdict.runs
                self.requeued += verdict.requeued_jobs
            if chaos is not None:
                self.counts.update(chaos.counts)
                self.notes += chaos.notes
                self.acknowledged += len(chaos.workload.acknowledged)
                self.unacknowledged += chaos.workload.unacknowledged
            await scope.close()

    def record(self, violations: list[str], where: str) -> None:
        """Keep each violation once, where it was first found (the checks after each
        step look at every job of the cluster again)."""
        for violation in violations:
            if violation in self.found:
                continue
            self.found.add(violation)
            line = f"seed {self.seed}, {where}: {violation}"
            self.violations.append(line)
            self.say(f"VIOLATION {line}")

    async def measure_phase(self) -> None:
        scope = Scope(self.base / "pauses", self.reactor)
        self.say(f"pause measurement: worker expiry {MEASURED_EXPIRY}s, spans {PAUSE_SPANS}")
        chaos = None
        try:
            cluster = await ChaosCluster.start(scope, durable=False, worker_expiry=MEASURED_EXPIRY)
            runs_dir = Path(scope.mktemp())
            runs_dir.mkdir(parents=True)
            chaos = Chaos(
                cluster, Workload(runs_dir, 120, label="pause"), self.rng, MEASURED_EXPIRY
            )
            for repeat in range(self.args.repeats):
                for role in ("leader", "follower"):
                    for seconds in PAUSE_SPANS:
                        figures = self.pause_figures.setdefault(
                            (role, seconds), PauseFigures(role, seconds)
                        )
                        trial = await pause_trial(chaos, role, seconds)
                        figures.trials.append(trial)
                        self.counts["pauses"] += 1
                        self.say(
                            f"pause {repeat + 1}/{self.args.repeats} {role} {seconds}s "
                            f"(node {trial.node}, {trial.paused_for:.1f}s): {trial.runs} runs, "
                            f"gaps {[round(g, 2) for g in trial.gaps]}, {trial.status}"
                        )
                        self.record(trial.violations, f"pause {role} {seconds}s")
        except Exception as error:
            self.record([f"{type(error).__name__}: {error}"], "pause measurement")
        finally:
            if chaos is not None:
                self.acknowledged += len(chaos.workload.acknowledged)
            await scope.close()

    def report(self) -> dict:
        return {
            "command": " ".join(["python -m tests.chaos.long", *sys.argv[1:]]),
            "seed": self.seed,
            "minutes": round((time.monotonic() - self.started) / 60, 1),
            "scenarios": dict(sorted(self.scenarios_run.items())),
            "scenarios_total": sum(self.scenarios_run.values()),
            "faults": dict(sorted(self.counts.items())),
            "chaos_jobs": self.jobs,
            "chaos_runs": self.runs,
            "chaos_requeued_jobs": self.requeued,
            "acknowledged_jobs": self.acknowledged,
            "unacknowledged_submissions": self.unacknowledged,
            "violations": self.violations,
            "notes": self.notes,
            "pauses": [figures.summary() for figures in self.pause_figures.values()],
        }


async def run(reactor, args: argparse.Namespace) -> None:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    base = Path(tempfile.mkdtemp(prefix="jobsched-chaos-"))
    long_run = LongRun(reactor, args, seed, base)
    long_run.say(f"chaos seed {seed}; scratch directory {base}")
    if args.minutes > 0:
        await long_run.chaos_phase()
    if args.repeats > 0:
        await long_run.measure_phase()
    report = long_run.report()
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if args.report:
        Path(args.report).write_text(text + "\n")
    if report["violations"]:
        long_run.say(f"the nodes' logs are kept in {base}")
        raise SystemExit(1)
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="of random faults")
    parser.add_argument("--repeats", type=int, default=10, help="pauses per role and span")
    parser.add_argument("--seed", type=int, help="replay the choices of an earlier run")
    parser.add_argument("--report", help="also write the JSON report here")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=sorted(LONG_SCENARIOS),
        default=sorted(LONG_SCENARIOS),
        metavar="NAME",
        help=f"draw only from these ({', '.join(sorted(LONG_SCENARIOS))})",
    )
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))


if __name__ == "__main__":
    main()
