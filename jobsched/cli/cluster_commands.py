"""`jobsched cluster ...` and `jobsched log list`.

The node forwards what only the leader can answer (cluster status, the log), so none of
these redirect. A transfer or drain that did not happen ends with exit 1 in table mode;
in JSON mode its answer (`"success": false`) is the output and the exit is 0.
"""

from __future__ import annotations

import argparse

from rich.text import Text

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import tables, views
from jobsched.cli.connection import Connection
from jobsched.cli.context import CommandContext
from jobsched.cli.failures import CliFailure


def status(args: argparse.Namespace, context: CommandContext) -> int:
    with Connection(context.settings) as connection:
        response = connection.call("GetClusterStatus", pb.GetClusterStatusRequest())
    if context.printer.json_mode:
        context.printer.json(views.cluster_status(response))
    else:
        tables.cluster_status(context.printer, response)
    return 0


def _outcome(context: CommandContext, success: bool, message: str, view: dict) -> int:
    if context.printer.json_mode:
        context.printer.json(view)
        return 0
    if not success:
        raise CliFailure(message)
    context.printer.show(Text(message, style="green"))
    return 0


def transfer_leader(args: argparse.Namespace, context: CommandContext) -> int:
    request = pb.TransferLeadershipRequest(target_node_id=args.to or 0)
    with Connection(context.settings) as connection:
        response = connection.call("TransferLeadership", request)
    return _outcome(context, response.success, response.message, views.transferred(response))


def drain(args: argparse.Namespace, context: CommandContext) -> int:
    with Connection(context.settings) as connection:
        response = connection.call("DrainNode", pb.DrainNodeRequest())
    return _outcome(context, response.success, response.message, views.drained(response))


def log_list(args: argparse.Namespace, context: CommandContext) -> int:
    request = pb.GetRaftLogEntriesRequest(start_index=args.start_index, limit=args.limit)
    with Connection(context.settings) as connection:
        response = connection.call("GetRaftLogEntries", request)
    if context.printer.json_mode:
        context.printer.json(views.raft_log(response))
    else:
        tables.raft_log(context.printer, response)
    return 0
