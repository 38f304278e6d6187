"""Where a command's answer goes: JSON (pretty, exactly the keys of views.py) or
human-readable text through rich, which measures terminal cells (wide CJK and emoji)
and colours only a terminal (honouring NO_COLOR)."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from rich.console import Console, RenderableType


def _console(file: TextIO) -> Console:
    # markup and emoji codes off: commands and output are shown exactly as they are
    return Console(file=file, highlight=False, markup=False, emoji=False)


class Printer:
    """The two output streams of one command and the chosen format."""

    def __init__(self, output_format: str, stdout: TextIO, stderr: TextIO) -> None:
        self.json_mode = output_format == "json"
        self._stdout = stdout
        self._stderr = stderr
        self.out = _console(stdout)
        self.err = _console(stderr)

    def json(self, value: object) -> None:
        """One pretty-printed JSON document on stdout."""
        self._stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
        self._stdout.flush()

    def json_line(self, value: object) -> None:
        """One JSON object on one line of stdout (streams of objects)."""
        self._stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        self._stdout.flush()

    def show(self, renderable: RenderableType = "") -> None:
        """Text or a table on stdout; lines are never wrapped or cut by the console."""
        self.out.print(renderable, soft_wrap=True)

    def notice(self, renderable: RenderableType) -> None:
        """A line for the user on stderr (redirects, warnings, how to go on)."""
        self.err.print(renderable, soft_wrap=True)

    def raw(self, text: str, to_stderr: bool = False) -> None:
        """A job's own output, byte for byte as it was captured."""
        stream = self._stderr if to_stderr else self._stdout
        stream.write(text)
        stream.flush()


def default_printer(output_format: str) -> Printer:
    return Printer(output_format, sys.stdout, sys.stderr)
