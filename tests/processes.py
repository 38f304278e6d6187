"""Finding processes on this host by their command line (for tests of what a node
leaves running). A zombie has an empty command line, so a killed process that is not
reaped yet counts as gone."""

from __future__ import annotations

import os
from pathlib import Path

KEEPER_MODULE = "jobsched.worker.fence_keeper"


def pids_with(marker: str, parent: int | None = None) -> list[int]:
    """Pids of live processes whose command line contains `marker` (and, if given,
    whose parent is `parent`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker not in command:
                continue
            if parent is not None and _parent_of(entry) != parent:
                continue
        except OSError:  # it ended while we looked
            continue
        found.append(int(entry.name))
    return found


def _parent_of(entry: Path) -> int:
    stat = (entry / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def keeper_pids(node_pid: int) -> list[int]:
    """The fence keeper(s) a node process (or this test process) spawned."""
    return pids_with(KEEPER_MODULE, parent=node_pid)
