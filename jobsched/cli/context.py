"""What every client command is run with: its connection settings and its printer."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from jobsched.cli.connection import DEFAULT_ADDRESS, ClientSettings, Target
from jobsched.cli.output import Printer


@dataclass(frozen=True)
class CommandContext:
    settings: ClientSettings
    printer: Printer

    def command_line(self, *words: str, target: Target | None = None) -> str:
        """A `jobsched ...` line the user can run next, aimed at `target` (default:
        the node this command talked to)."""
        url = (target or self.settings.target).url
        address = [] if url == DEFAULT_ADDRESS else ["-a", url]
        return shlex.join(["jobsched", *address, *words])
