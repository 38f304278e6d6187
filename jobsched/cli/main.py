"""The `jobsched` console script: `jobsched server ...` runs a node; the client commands
(`job`, `cluster`, `log`) talk gRPC to one node (CLI.md, BEHAVIOUR.md §8).

The client is synchronous: plain grpc calls, no reactor. Exit codes: 0 success, 1 a
failure (the server's, or no connection), 2 a usage error; the waiting commands end as
the job did (jobsched.cli.outcome). A failure is one line `Error: <message>` on stderr,
never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from jobsched.cli.failures import EXIT_FAILURE, EXIT_INTERRUPTED, CliExit, CliFailure
from jobsched.cli.parser import build_parser
from jobsched.errors import JobschedError


def run_server(server_args: Sequence[str]) -> int:
    """Run twistd in this process, as `twistd -n jobsched <server_args>`.

    In-process rather than exec of a `twistd` script, so it works wherever jobsched is
    importable. No pidfile: several nodes may run from one directory.
    """
    from twisted.scripts.twistd import run

    sys.argv = ["jobsched server", "--nodaemon", "--pidfile=", "jobsched", *server_args]
    run()
    return 0


def _run_client(namespace) -> int:
    # grpc's own log lines (a failed TLS handshake...) would break the one-line errors;
    # the call's status says what went wrong. Set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from jobsched.cli.connection import ClientSettings  # imports grpc
    from jobsched.cli.context import CommandContext
    from jobsched.cli.output import default_printer

    module_name, function_name = namespace.handler.split(".")
    handler = getattr(importlib.import_module(f"jobsched.cli.{module_name}"), function_name)
    printer = default_printer(namespace.output)
    context = CommandContext(ClientSettings.from_options(namespace), printer)
    return handler(namespace, context)


def _fail(message: str, hint: str | None = None) -> None:
    sys.stderr.write(f"Error: {message}\n")
    if hint:
        sys.stderr.write(f"Hint: {hint}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(run_server)
    namespace, rest = parser.parse_known_args(args)
    if namespace.command == "server":
        return namespace.func(rest)
    if namespace.command == "certs":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return namespace.func(namespace)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return _run_client(namespace)
    except CliFailure as failure:
        _fail(failure.message, failure.hint)
        return failure.exit_code
    except JobschedError as error:
        _fail(error.message)
        return EXIT_FAILURE
    except CliExit as done:
        return done.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `jobsched job list | head`
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
