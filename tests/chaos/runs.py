"""Counting executions: each job of a chaos run appends to a file of its own.

A job's command is a shell loop that writes one line when it starts, one every 100 ms
while it runs and one when it ends, each `<run token> <node pid> <kind> <ns>`: the run
token is the shell's pid and its start time (unique per run), the node pid is the
shell's parent (the node process that spawned it, which names the worker), the time is
the host's wall clock in nanoseconds (the clock the attempt history is written in). A
run killed before its end still leaves its ticks, so runs that overlap show even when
neither finished.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

TICK_SECONDS = 0.1
KINDS = ("start", "tick", "end")


def tick_command(path: Path, ticks: int) -> str:
    """The command of a job that runs for about `ticks` times 100 ms, logging to `path`."""
    target = shlex.quote(str(path))
    return (
        f"t=$(date +%s%N); r=$$.$t; f={target}; "
        f'echo "$r $PPID start $t" >> $f; i=0; '
        f"while [ $i -lt {ticks} ]; do sleep {TICK_SECONDS}; "
        f'echo "$r $PPID tick $(date +%s%N)" >> $f; i=$((i+1)); done; '
        f'echo "$r $PPID end $(date +%s%N)" >> $f'
    )


@dataclass
class Run:
    """One execution of a job's command, as its lines tell it."""

    token: str
    node_pid: int
    first_ns: int
    last_ns: int
    ended: bool = False
    lines: int = 1

    @property
    def first_ms(self) -> float:
        return self.first_ns / 1e6

    @property
    def last_ms(self) -> float:
        return self.last_ns / 1e6

    def overlaps(self, other: Run) -> bool:
        return self.first_ns <= other.last_ns and other.first_ns <= self.last_ns


def parse_runs(text: str) -> list[Run]:
    """The runs in a job's file, in order of their first line; malformed lines (a
    write cut short) are skipped."""
    runs: dict[str, Run] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) != 4 or words[2] not in KINDS:
            continue
        token, pid, kind, stamp = words
        try:
            node_pid, at = int(pid), int(stamp)
        except ValueError:
            continue
        run = runs.get(token)
        if run is None:
            runs[token] = Run(token, node_pid, at, at, ended=kind == "end")
            continue
        run.first_ns = min(run.first_ns, at)
        run.last_ns = max(run.last_ns, at)
        run.ended = run.ended or kind == "end"
        run.lines += 1
    return sorted(runs.values(), key=lambda run: run.first_ns)


def read_runs(path: Path) -> list[Run]:
    """The runs of the job logging to `path` (none if it never ran)."""
    try:
        return parse_runs(path.read_text(errors="replace"))
    except FileNotFoundError:
        return []
