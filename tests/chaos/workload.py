"""The jobs of a chaos run: each logs its runs to a file of its own (`runs.py`), is
submitted with an idempotency key (so a retried submission cannot make two jobs), and
counts as acknowledged only once a node answered with its id."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tests.chaos.runs import Run, read_runs, tick_command
from tests.nodeproc import Node, pause

SUBMIT_RETRY_SECONDS = 0.3
JOB_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ChaosJob:
    uid: str
    path: Path
    command: str
    max_attempts: int

    def runs(self) -> list[Run]:
        return read_runs(self.path)


class Workload:
    """Makes, submits and remembers jobs; `directory` holds their run files."""

    def __init__(self, directory: Path, ticks: int, label: str = "job") -> None:
        self.directory = directory
        self.ticks = ticks
        self.label = label
        self.by_command: dict[str, ChaosJob] = {}
        self.acknowledged: dict[str, ChaosJob] = {}
        self.unacknowledged = 0

    def new_job(self, max_attempts: int, ticks: int | None = None) -> ChaosJob:
        uid = f"{self.label}-{len(self.by_command) + 1}"
        path = self.directory / f"{uid}.runs"
        command = tick_command(path, ticks or self.ticks)
        job = ChaosJob(uid, path, command, max_attempts)
        self.by_command[command] = job
        return job

    async def submit(self, nodes: list[Node], job: ChaosJob, within: float) -> str | None:
        """Submit through `nodes` in turn until one acknowledges, for up to `within`
        seconds; the job id, or None if none did (the job may exist all the same)."""
        body = {
            "command": job.command,
            "idempotency_key": job.uid,
            "max_attempts": job.max_attempts,
            "timeout_seconds": JOB_TIMEOUT_SECONDS,
        }
        deadline = time.monotonic() + within
        turn = 0
        while nodes:
            node = nodes[turn % len(nodes)]
            turn += 1
            try:
                remaining = max(1.0, deadline - time.monotonic())
                answer = await node.rest("POST", "/api/jobs", body, timeout=min(10, remaining))
            except Exception:  # a node that cannot answer now; try again
                answer = None
            if answer is not None and answer.status == 200:
                self.acknowledged[answer.body["job_id"]] = job
                return answer.body["job_id"]
            if time.monotonic() >= deadline:
                break
            await pause(SUBMIT_RETRY_SECONDS)
        self.unacknowledged += 1
        return None

    def job_of(self, table_entry: dict) -> ChaosJob | None:
        """Which of ours a table entry is (by its command), if any."""
        return self.by_command.get(table_entry["command"])
