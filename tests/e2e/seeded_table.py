"""A cluster that starts with a large table of finished jobs, for the dashboard's
paging test and bench (bench/dashboard_render.py).

The table is built in-process by applying real commands to a JobTable, and each node's
data directory gets it as its Raft snapshot (SQLite storage, the IRaftStorage calls a
node makes itself), so the nodes start with it in a second instead of running
thousands of jobs.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path

from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.jobs.table import JobTable
from jobsched.raft.sqlite_storage import SqliteStorage

FAILED_EVERY = 10  # every 10th job failed, the others completed


def finished_jobs(count: int, now_ms: int | None = None) -> tuple[bytes, int]:
    """The snapshot of a table of `count` finished jobs created over the last hour(s),
    and the log index it stands for."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    table = JobTable()
    index = 0

    def apply(command: bytes) -> None:
        nonlocal index
        index += 1
        table.apply(index, command)

    for n in range(count):
        job_id = str(uuid.UUID(int=random.Random(n).getrandbits(128), version=4))
        created = now_ms - (count - n) * 360
        failed = n % FAILED_EVERY == FAILED_EVERY - 1
        worker = n % 3 + 1
        apply(commands.submit_job(job_id, f"echo seeded job {n}", created, image="busybox"))
        apply(commands.assign_job(job_id, worker, 1, assigned_at_ms=created + 5))
        result = JobResult(
            JobStatus.FAILED if failed else JobStatus.COMPLETED,
            1 if failed else 0,
            f"seeded job {n}\n",
            "failed on purpose\n" if failed else "",
            False,
            created + 10,
            created + 40 + n % 200,
        )
        apply(commands.batch_update([commands.status_update(job_id, result, worker, 1)]))
    return table.snapshot(), index


async def write_data_dirs(workdir: Path, node_ids, snapshot: bytes, index: int, reactor) -> None:
    """Give each node `workdir/node<id>` holding `snapshot` at `index`, term 1."""
    for node_id in node_ids:
        path = workdir / f"node{node_id}"
        os.makedirs(path, exist_ok=True)
        storage = SqliteStorage(str(path), node_id, reactor)
        storage.load()
        await storage.save_hard_state(1, 0)
        await storage.save_snapshot(index, 1, snapshot)
        await storage.close()
