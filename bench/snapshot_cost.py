"""What a compaction's snapshot and a restart cost a node's reactor, on a job table of
N jobs submitted as SubmitJobs entries of 100 `true` jobs (the node's collector settings).

    .venv/bin/python -m bench.snapshot_cost [--jobs N] [--keys]

whole     `JobTable.snapshot()`: the snapshot in one call, as compactions were taken
          before the sixteenth pass
slices    `begin_snapshot()` and `step(SNAPSHOT_STEP_RECORDS)` until complete, as the
          Raft service takes them now: reactor turns, the longest, the first (which
          copies the idempotency keys) and all of them together
          Each twice: `new` when no job's record was encoded yet (jobs changed since the
          last compaction), `cached` when every one was.
restore   `JobTable.restore` of that snapshot in one call (a node loading it at start-up,
          and a follower installing it before the seventeenth pass), then in slices of
          RESTORE_STEP_RECORDS, as a follower installs a leader's snapshot now
replay    applying 8,000 entries (4,000 submits, 4,000 assignments): the most a restarted
          durable node replays beside its snapshot (SqliteStorage.SNAPSHOT_WRITE_ENTRIES)

`--keys` gives every job an idempotency key. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from bench.common import machine_note
from jobsched import collector
from jobsched.jobs import commands
from jobsched.jobs.table import JobTable
from jobsched.raft.service import RESTORE_STEP_RECORDS, SNAPSHOT_STEP_RECORDS
from jobsched.raft.sqlite_storage import SNAPSHOT_WRITE_ENTRIES

BATCH = 100
T0 = 1_700_000_000_000


def _table(jobs: int, keys: bool) -> JobTable:
    table = JobTable()
    table.apply(1, commands.entry_forms(commands.ENTRY_FORMS))
    for batch in range(jobs // BATCH):
        entry = commands.submit_jobs(
            commands.job_to_submit(
                str(uuid.uuid4()),
                "true",
                T0 + batch,
                idempotency_key=f"key-{batch}-{n}" if keys else "",
            )
            for n in range(BATCH)
        )
        table.apply(batch + 2, entry)
    return table


def _whole(table: JobTable) -> tuple[float, int]:
    started = time.perf_counter()
    data = table.snapshot()
    return time.perf_counter() - started, len(data)


def _slices(begin: Callable[[], object], step: Callable[[object], bool]) -> str:
    """Work begun by `begin()` and done by `step(work)` until it returns True, as the
    Raft service does it, a step a reactor turn: the turns, the longest, the first
    (with the beginning), and all of them together."""
    started = time.perf_counter()
    work = begin()
    began = time.perf_counter() - started
    turns, longest, first, total = 0, 0.0, 0.0, began
    while True:
        started = time.perf_counter()
        done = step(work)
        took = time.perf_counter() - started
        if turns == 0:
            first = began + took
        turns += 1
        longest = max(longest, first if turns == 1 else took)
        total += took
        if done:
            return (
                f"{turns:4} turns, longest {1000 * longest:6.1f} ms, "
                f"first {1000 * first:6.1f} ms, in all {1000 * total:7.1f} ms"
            )


def _replay_seconds() -> float:
    ids = [str(uuid.uuid4()) for _ in range(SNAPSHOT_WRITE_ENTRIES // 2)]
    entries = [
        commands.submit_job(job_id, "true", T0 + n, idempotency_key=f"k{n}")
        for n, job_id in enumerate(ids)
    ] + [commands.assign_job(job_id, 1, 1, 7, T0 + n) for n, job_id in enumerate(ids)]
    table = JobTable()
    started = time.perf_counter()
    for index, entry in enumerate(entries, start=1):
        table.apply(index, entry)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--keys", action="store_true", help="an idempotency key per job")
    args = parser.parse_args()
    collector.settle_after_start_up()  # as a node does before its jobs arrive
    keys = "with" if args.keys else "without"
    print(f"# {args.jobs:,} jobs {keys} idempotency keys · {machine_note()}")
    table = _table(args.jobs, args.keys)  # no record encoded yet
    for label in ("new", "cached"):
        seconds, size = _whole(table)
        print(f"whole   {label:6}  {1000 * seconds:7.1f} ms  ({size / 1e6:.1f} MB)")
    table = _table(args.jobs, args.keys)
    for label in ("new", "cached"):
        built = _slices(table.begin_snapshot, lambda b: b.step(SNAPSHOT_STEP_RECORDS) is not None)
        print(f"slices  {label:6}  {built}")
    data = table.snapshot()
    started = time.perf_counter()
    JobTable().restore(data)
    print(f"restore whole   {1000 * (time.perf_counter() - started):7.1f} ms")
    restored = _slices(
        lambda: JobTable().begin_restore(data), lambda r: r.step(RESTORE_STEP_RECORDS)
    )
    print(f"restore slices  {restored}")
    print(f"replay  {SNAPSHOT_WRITE_ENTRIES:,} entries {1000 * _replay_seconds():7.1f} ms")


if __name__ == "__main__":
    main()
