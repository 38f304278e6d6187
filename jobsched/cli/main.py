"""The `jobsched` console script: `jobsched <command> ...` (BEHAVIOUR.md §8).

Exit codes: 0 success, 1 failure, 2 usage error (argparse's own convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobsched.cli import certs

SERVER_DESCRIPTION = (
    "Run a cluster node, exactly as `twistd -n jobsched [options]` (without a pidfile). "
    "See `jobsched server --help` for the options."
)


def build_parser() -> argparse.ArgumentParser:
    """The command tree; each subcommand stores its handler as `func`."""
    parser = argparse.ArgumentParser(
        prog="jobsched", description="A distributed batch-job scheduler."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server = commands.add_parser(
        "server",
        help="run a cluster node",
        description=SERVER_DESCRIPTION,
        add_help=False,  # `jobsched server --help` shows the node's own option help
    )
    server.set_defaults(func=run_server)
    certs.add_parser(commands)
    return parser


def run_server(server_args: Sequence[str]) -> int:
    """Run twistd in this process, as `twistd -n jobsched <server_args>`.

    In-process rather than exec of a `twistd` script, so it works wherever jobsched is
    importable. No pidfile: several nodes may run from one directory.
    """
    from twisted.scripts.twistd import run

    sys.argv = ["jobsched server", "--nodaemon", "--pidfile=", "jobsched", *server_args]
    run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    namespace, rest = parser.parse_known_args(args)
    if namespace.command == "server":
        return namespace.func(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return namespace.func(namespace)


if __name__ == "__main__":
    sys.exit(main())
