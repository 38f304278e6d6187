"""The command tree of `jobsched` (CLI.md). docs/cli.md is generated from it
(`python -m jobsched.cli.reference`), and a test keeps the two the same.

A command names its handler as `module.function` in jobsched.cli, imported only when it
runs, so that `jobsched server` and `--help` load no client code (nor grpc).

Client options may stand anywhere after `jobsched`: they are declared on the top
parser (with the defaults) and again on every group and command parser with
`default=SUPPRESS`, so a value given at any level survives and none is reset.
"""

from __future__ import annotations

import argparse

from jobsched import __version__
from jobsched.cli import certs

DESCRIPTION = "A distributed batch-job scheduler: run a node, or talk to a cluster."
EPILOG = """\
Client options (-a, -o, --token, ...) may come before or after any command.
Run `jobsched COMMAND --help` for a command's own options.

Documentation, in the jobsched source tree (docs/):
  getting-started.md  one node, a first job with this command, a 3-node cluster
  cli.md              every command, option, JSON key and exit code
  api.md              the gRPC and REST APIs, errors and their codes
  operations.md       running a cluster: restarts, drain, backups, upgrades, TLS"""

SERVER_DESCRIPTION = (
    "Run a cluster node, exactly as `twistd -n jobsched [options]` (without a pidfile). "
    "See `jobsched server --help` for the options."
)

JOB_ID_HELP = "the job's id (any standard UUID form)"
CLIENT_OPTION_DESTS = frozenset(
    {"addr", "ca_cert", "cert", "key", "token", "output", "rpc_timeout"}
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got '{text}')")
    return value


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} (got '{text}')")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def add_client_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The client options; only the top parser sets their defaults."""

    def default(value):
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("client options")
    group.add_argument(
        "-a",
        "--addr",
        default=default(None),
        metavar="URL",
        help="node to talk to: http://HOST:PORT, or https://HOST:PORT for TLS "
        "(default: $JOBSCHED_ADDR, else http://127.0.0.1:50051)",
    )
    group.add_argument(
        "--ca-cert",
        default=default(None),
        metavar="FILE",
        help="PEM CA that signed the nodes' certificates (https; default: the system's)",
    )
    group.add_argument(
        "--cert", default=default(None), metavar="FILE", help="PEM client certificate (mutual TLS)"
    )
    group.add_argument(
        "--key", default=default(None), metavar="FILE", help="PEM client private key (mutual TLS)"
    )
    group.add_argument(
        "--token",
        default=default(None),
        help="bearer token sent as `authorization` metadata (default: $JOBSCHED_TOKEN)",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=default("table"),
        help="table (for people, the default) or json (for scripts)",
    )
    group.add_argument(
        "--rpc-timeout",
        type=_positive_float,
        default=default(None),
        metavar="S",
        help="seconds each call may take (default: 15; 90 for drain, 120 for --stream)",
    )


def _sentence(summary: str) -> str:
    return summary[0].upper() + summary[1:] + "."


def _command(group, name: str, handler: str, summary: str, description: str | None = None):
    parser = group.add_parser(name, help=summary, description=description or _sentence(summary))
    add_client_options(parser, top=False)
    parser.set_defaults(handler=handler)
    return parser


def _group(commands, name: str, summary: str):
    parser = commands.add_parser(name, help=summary, description=_sentence(summary))
    add_client_options(parser, top=False)
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)


def _add_job_commands(commands) -> None:
    jobs = _group(commands, "job", "submit, inspect, cancel and wait for jobs")

    submit = _command(
        jobs,
        "submit",
        "job_commands.submit",
        "submit a shell command as a job",
        "Submit COMMAND (run as `sh -c COMMAND`) to the leader; a follower's answer "
        "redirects there once. Quote the command as one argument.",
    )
    submit.add_argument("command", metavar="COMMAND", help="the shell command to run")
    submit.add_argument("--image", metavar="I", help="Docker image (default: the node's)")
    submit.add_argument(
        "--timeout",
        type=_int_at_least(0),
        metavar="S",
        help="the job's own timeout in seconds (default: the node's)",
    )
    submit.add_argument(
        "--max-attempts",
        type=_int_at_least(1),
        metavar="N",
        help="attempts when workers are lost, 1-10 (default: the node's)",
    )
    submit.add_argument(
        "--idempotency-key",
        metavar="K",
        help="retrying with the same key within 24 h returns the same job",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job, print its output and exit with its exit code",
    )

    status = _command(jobs, "status", "job_commands.status", "show a job, its output included")
    status.add_argument("job_id", metavar="ID", help=JOB_ID_HELP)

    cancel = _command(
        jobs,
        "cancel",
        "job_commands.cancel",
        "cancel a pending or running job",
        "Cancel a job at the leader (a follower's answer redirects there once).",
    )
    cancel.add_argument("job_id", metavar="ID", help=JOB_ID_HELP)

    listing = _command(jobs, "list", "job_commands.list_jobs", "list jobs, oldest first")
    listing.add_argument(
        "-s", "--stream", action="store_true", help="stream every job (only --status applies)"
    )
    listing.add_argument(
        "--page-size", type=_int_at_least(1), default=100, metavar="N", help="jobs per page"
    )
    listing.add_argument("--all", action="store_true", help="fetch all pages")
    listing.add_argument(
        "--status",
        metavar="S",
        help="pending, running, completed, failed or cancelled (any case)",
    )
    listing.add_argument(
        "--worker", type=_int_at_least(1), metavar="N", help="assigned to or run by node N"
    )
    listing.add_argument("--command-substr", metavar="T", help="command contains T (any case)")
    listing.add_argument(
        "--created-after-ms",
        type=_int_at_least(0),
        metavar="MS",
        help="created at or after (Unix ms)",
    )
    listing.add_argument(
        "--created-before-ms",
        type=_int_at_least(0),
        metavar="MS",
        help="created at or before (Unix ms)",
    )

    wait = _command(
        jobs,
        "wait",
        "job_commands.wait",
        "wait for a job to finish",
        "Wait for a job, print its output and exit with its exit code "
        "(124 timed out, 125 cancelled, 1 failed without a code).",
    )
    wait.add_argument("job_id", metavar="ID", help=JOB_ID_HELP)
    wait.add_argument(
        "--max-wait",
        type=_positive_float,
        metavar="S",
        help="give up waiting after S seconds with exit 3 (the job goes on)",
    )

    logs = _command(
        jobs,
        "logs",
        "job_commands.logs",
        "print a job's output, or follow it",
        "Print a job's stdout (to stdout) and stderr (to stderr) as far as it has got; "
        "with -f, follow it while the job runs and exit with the job's exit code "
        "(124 timed out, 125 cancelled, 1 failed without a code).",
    )
    logs.add_argument("job_id", metavar="ID", help=JOB_ID_HELP)
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="follow the output until the job is final (any node serves it)",
    )
    only = logs.add_mutually_exclusive_group()
    only.add_argument("--stdout-only", action="store_true", help="only the job's stdout")
    only.add_argument("--stderr-only", action="store_true", help="only the job's stderr")


def _add_cluster_commands(commands) -> None:
    cluster = _group(commands, "cluster", "see and steer the cluster")
    _command(cluster, "status", "cluster_commands.status", "term, leader and every node's liveness")
    transfer = _command(
        cluster,
        "transfer-leader",
        "cluster_commands.transfer_leader",
        "hand leadership to another node",
        "Ask the leader to hand leadership over; it answers once the target has won.",
    )
    transfer.add_argument(
        "--to",
        type=_int_at_least(1),
        metavar="N",
        help="the new leader (default: the leader picks)",
    )
    _command(
        cluster,
        "drain",
        "cluster_commands.drain",
        "drain the node -a names",
        "Stop the node from taking jobs, wait up to 60 s for its running jobs, and "
        "hand leadership away if it leads. Lasts until the node restarts.",
    )

    log = _group(commands, "log", "read the replicated Raft log")
    entries = _command(log, "list", "cluster_commands.log_list", "list Raft log entries")
    entries.add_argument(
        "--start-index",
        type=_int_at_least(0),
        default=0,
        metavar="N",
        help="first index (0: the first still in the log)",
    )
    entries.add_argument(
        "--limit", type=_int_at_least(1), default=100, metavar="N", help="at most N entries"
    )


def build_parser(run_server) -> argparse.ArgumentParser:
    """The whole tree; each client command stores its handler's name as `handler`;
    `server` stores `run_server` as `func` (it takes the raw arguments after it)."""
    parser = argparse.ArgumentParser(
        prog="jobsched",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"jobsched {__version__}")
    add_client_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    server = commands.add_parser(
        "server",
        help="run a cluster node",
        description=SERVER_DESCRIPTION,
        add_help=False,  # `jobsched server --help` shows the node's own option help
    )
    server.set_defaults(func=run_server)
    _add_job_commands(commands)
    _add_cluster_commands(commands)
    certs.add_parser(commands)
    return parser
