"""The node's log output: `--log-format text|json`, informational level and above.

twistd builds its log observer from its own `logger` option (the dotted name of a
factory) after the plugin's options are parsed, so the plugin names one of the two
factories below. Debug messages (lost Raft RPCs to a
dead peer, for instance, twenty a second) are filtered out.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)


def _informational(writer: ILogObserver) -> ILogObserver:
    return FilteringLogObserver(writer, [LogLevelFilterPredicate(LogLevel.info)])


def text_observer() -> ILogObserver:
    """Text lines on standard output."""
    return _informational(textFileLogObserver(sys.stdout))


def json_observer() -> ILogObserver:
    """One JSON object per line on standard output."""
    return _informational(jsonFileLogObserver(sys.stdout, recordSeparator=""))


FACTORIES = {"text": "jobsched.logs.text_observer", "json": "jobsched.logs.json_observer"}


def install(twistd_options, log_format: str) -> None:
    """Make twistd log through our observer when it logs to standard output in the
    foreground (`-n`) and no other logger or log file was asked for."""
    if twistd_options is None or twistd_options.get("logger"):
        return
    if twistd_options.get("nodaemon") and twistd_options.get("logfile") in (None, "-"):
        twistd_options["logger"] = FACTORIES[log_format]


def exit_with_error(message: str, status: int = 1) -> NoReturn:
    """End the process at once with one line, `jobsched: error: <message>`, on the
    process's own standard error (twistd redirects `sys.stderr` into the log).

    Crash-only: nothing is cleaned up, so that a supervisor restarts the node from its
    durable state (BEHAVIOUR §6)."""
    sys.stdout.flush()
    sys.__stderr__.write(f"jobsched: error: {message}\n")
    sys.__stderr__.flush()
    os._exit(status)
