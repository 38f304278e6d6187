"""docs/cli.md, generated: the commands and options from the parser, the JSON keys from
the view functions, the exit codes from their constants. Regenerate with
`python -m jobsched.cli.reference > docs/cli.md`; a unit test fails when they differ.
"""

from __future__ import annotations

import argparse
import sys

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import failures, views
from jobsched.cli.main import run_server
from jobsched.cli.parser import CLIENT_OPTION_DESTS, build_parser

HEADER = """\
# The `jobsched` command

Generated from the command's own parser by `python -m jobsched.cli.reference >
docs/cli.md` (a test fails when this file and the parser disagree). The contract it
follows is CLI.md of the specification; a first walk-through is in the README.

`jobsched server [options]` runs a node, exactly as `twistd -n jobsched [options]`
(its options: `jobsched server --help`, and the README's table). Every other command
is a client: it talks gRPC to the one node `-a` names.
"""

NOTES = """\
## Behaviour

- **Leader redirect.** `job submit` and `job cancel` sent to a follower are answered
  NOT_LEADER with the leader's address in the trailing metadata
  `jobsched-leader-address`; the CLI prints `Redirecting to leader at <url>...` on
  stderr and sends the call there once (same scheme and TLS options). Without an
  address it asks the same node's cluster status; without a leader it prints the
  error and a hint. Other commands never redirect: the node forwards what only the
  leader can answer.
- **Errors** are one line, `Error: <message>`, on stderr (a `Hint:` line may follow),
  never a traceback. The error's kind is read from the trailing metadata
  `jobsched-error-code`, never from the message.
- **TLS.** `https://` addresses use TLS: the node's certificate must be signed by
  `--ca-cert` (else a system CA) and carry the DNS name `jobsched`, whatever address
  is dialled. `--cert`/`--key` add a client certificate (mutual TLS). `--token` is
  sent as `authorization: Bearer <token>` on every call.
- **Tables** align by terminal cells (CJK and most emoji are two cells wide) and cut
  long values with `…` between characters; colour only on a terminal (`NO_COLOR`
  turns it off). Times are local, with how long ago.
- **Waiting** (`job submit --wait`, `job wait`) polls the job's status with a short
  backoff; on a terminal a spinner with the elapsed time runs on stderr. Then the
  job's stdout goes to stdout and its stderr to stderr (`-o json`: the status
  object), and the command exits as the job did.
"""

EXIT_CODES = [
    (failures.EXIT_OK, "success"),
    (
        failures.EXIT_FAILURE,
        "a failure the server reported, no connection, a failed transfer or drain "
        "(table mode); a waited-for job that failed without an exit code",
    ),
    (failures.EXIT_USAGE, "a usage error (`--help` and `--version` exit 0)"),
    (failures.EXIT_STILL_RUNNING, "`job wait --max-wait` ran out; the job goes on"),
    (failures.EXIT_TIMED_OUT, "the waited-for job timed out"),
    (failures.EXIT_CANCELLED, "the waited-for job was cancelled"),
    (
        failures.EXIT_INTERRUPTED,
        "Ctrl-C while waiting; the job goes on (the CLI says how to cancel it)",
    ),
]


def _json_shapes() -> list[tuple[str, dict]]:
    """(commands, an example object) for every JSON answer, built by the real views."""
    example_job = pb.JobInfo(job_id="…", status=pb.JOB_STATUS_PENDING)
    return [
        ("job submit", views.submitted(pb.SubmitJobResponse())),
        ("job status, job wait, job submit --wait", views.job_status(pb.GetJobStatusResponse())),
        ("job cancel", views.cancelled(pb.CancelJobResponse())),
        ("job list", views.job_list([example_job], 1, False)),
        ("job logs (one object per line)", views.output_chunk("stdout", "", 0)),
        ("job logs (last line, once the job is final)", views.output_end("COMPLETED", 0)),
        (
            "cluster status",
            views.cluster_status(pb.GetClusterStatusResponse(nodes=[pb.NodeInfo()])),
        ),
        ("cluster transfer-leader", views.transferred(pb.TransferLeadershipResponse())),
        ("cluster drain", views.drained(pb.DrainNodeResponse())),
        ("log list", views.raft_log(pb.GetRaftLogEntriesResponse(entries=[pb.RaftLogEntryInfo()]))),
    ]


def _keys(value: dict) -> str:
    parts = []
    for key, item in value.items():
        if isinstance(item, list) and item and isinstance(item[0], dict):
            parts.append(f"`{key}` (each: {', '.join(f'`{k}`' for k in item[0])})")
        else:
            parts.append(f"`{key}`")
    return ", ".join(parts)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """{name: (one-line help, parser)} of the commands directly under `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return {name: (helps[name], sub) for name, sub in action.choices.items()}
    return {}


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{names}`"
    if action.choices:
        return f"`{names} {{{','.join(action.choices)}}}`"
    return f"`{names} {action.metavar or action.dest.upper()}`"


def _meaning(action: argparse.Action) -> str:
    text = (action.help or "").replace("|", "\\|")
    shown_default = action.default not in (None, False, argparse.SUPPRESS)
    if shown_default and action.option_strings and "default" not in text:
        text += f" (default: {action.default})"
    return text


def _option_rows(parser: argparse.ArgumentParser, client: bool) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if isinstance(action, argparse._VersionAction):
            continue
        if (action.dest in CLIENT_OPTION_DESTS) != client:
            continue
        rows.append(f"| {_flags(action)} | {_meaning(action)} |")
    return rows


def _usage(path: str, parser: argparse.ArgumentParser) -> str:
    positionals = [
        action.metavar or action.dest
        for action in parser._actions
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
    ]
    return " ".join([f"jobsched {path}", "[options]", *positionals])


def _command_sections(parser: argparse.ArgumentParser) -> list[str]:
    sections = []
    for group_name, (group_help, group) in _subcommands(parser).items():
        if group_name == "server":
            continue
        sections.append(f"### `jobsched {group_name}` — {group_help}\n")
        for name, (help_text, command) in _subcommands(group).items():
            path = f"{group_name} {name}"
            description = command.description or help_text
            lines = [f"#### `{_usage(path, command)}`", "", description, ""]
            rows = _option_rows(command, client=False)
            if rows:
                lines += ["| option | meaning |", "|---|---|", *rows, ""]
            sections.append("\n".join(lines))
    return sections


def reference(parser: argparse.ArgumentParser) -> str:
    """The whole of docs/cli.md."""
    parts = [
        HEADER,
        "## Client options\n",
        "Accepted anywhere after `jobsched` (before the command, between group and verb, "
        "or after the verb).\n",
        "\n".join(["| option | meaning |", "|---|---|", *_option_rows(parser, client=True)]) + "\n",
        "## Commands\n",
        *_command_sections(parser),
        NOTES,
        "## JSON output (`-o json`)\n",
        "Pretty-printed, exactly these keys in this order; an absent value is `null` "
        "(a node id of 0 too).\n",
        "\n".join(
            ["| command | keys |", "|---|---|"]
            + [f"| {name} | {_keys(shape)} |" for name, shape in _json_shapes()]
        )
        + "\n",
        "## Exit codes\n",
        "\n".join(
            ["| code | meaning |", "|---|---|"]
            + [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES]
        )
        + "\n",
    ]
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(reference(build_parser(run_server)))


if __name__ == "__main__":
    main()
