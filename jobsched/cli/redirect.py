"""The leader redirect of submit and cancel (CLI.md, "Leader redirect").

A follower answers NOT_LEADER with the leader's client address in the trailing metadata
`jobsched-leader-address` (never read from the message). Without one, the same node is
asked for the cluster status; the call is retried once at the leader.
"""

from __future__ import annotations

from collections.abc import Callable

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli.connection import ClientSettings, Connection, Target
from jobsched.cli.failures import CliFailure


def call_leader(
    settings: ClientSettings, method: str, request, notice: Callable[[str], None]
) -> tuple[object, Target]:
    """Call `method` on the leader, starting at `--addr`; the answer and where it came from."""
    with Connection(settings) as first:
        try:
            return first.call(method, request), first.target
        except errors.NotLeader as not_leader:
            address = not_leader.leader_address or _leader_address(first)
            if address is None:
                raise CliFailure(str(not_leader), hint=_address_hint(first)) from None
    leader = settings.target.at(address)
    notice(f"Redirecting to leader at {leader.url}...")
    with Connection(settings, leader) as second:
        return second.call(method, request), leader


def _leader_address(connection: Connection) -> str | None:
    """The leader's client address as the node reports it in its cluster status."""
    try:
        status = connection.call("GetClusterStatus", pb.GetClusterStatusRequest())
    except (errors.JobschedError, CliFailure):
        return None
    for node in status.nodes:
        if node.node_id == status.leader_id and node.address:
            return node.address
    return None


def _address_hint(connection: Connection) -> str:
    scheme = connection.target.scheme
    return (
        "no leader is known right now; retry in a moment, or point -a at the leader, "
        f"e.g. jobsched -a {scheme}://LEADER_HOST:50051 job submit 'echo hi'"
    )
