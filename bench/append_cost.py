"""What one AppendEntries costs each end: a unary call, a message on an open stream and
a message on the peer port, between two processes that do nothing else.

    .venv/bin/python -m bench.append_cost [--messages N] [--rounds R]

The server (a process of its own, one grpc.aio server on its loop, like a node's)
answers RaftService.AppendEntries and AppendEntriesStream at once; a second one serves
the peer port (api/peer_port.py on the reactor, its Raft answering at once). The client
sends `--messages` requests one at a time, as a leader does to one follower: unary
calls as the transport made them before streams (`.future()` on a synchronous
channel), messages on one AppendEntriesStream (grpc.aio, as raft/append_streams.py
sends them), then framed messages on the peer port (raft/peer_links.py, on this
process's reactor). Prints the rate and each end's CPU per message; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from functools import partial
from typing import NamedTuple

import grpc

from bench.common import cpu_seconds, machine_note, serve_until_killed, serving
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.net.channels import Wire
from jobsched.raft import messages

REQUEST = pb.AppendEntriesRequest(
    term=3,
    leader_id=1,
    prev_log_index=100,
    prev_log_term=3,
    entries=[pb.LogEntry(index=101, term=3, command=b"x" * 120)],
    leader_commit=100,
)
ANSWER = pb.AppendEntriesResponse(term=3, success=True, match_index=101)


class AnsweringRaft(pb_grpc.RaftServiceServicer):
    async def AppendEntries(self, request, context):
        return ANSWER

    async def AppendEntriesStream(self, requests, context):
        async for _request in requests:
            yield ANSWER


def unary_calls(address: str, count: int) -> None:
    """One `.future()` call after another, each started from the previous one's
    completion, as the reactor did."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.RaftServiceStub(channel)
        stub.AppendEntries(REQUEST, timeout=5)
        finished = threading.Event()
        left = [count]

        def next_call(_done=None) -> None:
            if left[0] == 0:
                finished.set()
                return
            left[0] -= 1
            stub.AppendEntries.future(REQUEST, timeout=5).add_done_callback(next_call)

        next_call()
        finished.wait()


async def stream_messages(address: str, count: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.RaftServiceStub(channel).AppendEntriesStream()
        for _ in range(count + 1):
            await call.write(REQUEST)
            await call.read()
        call.cancel()


class AnsweringAtOnce:
    """The Raft behind the bench's peer port: every AppendEntries succeeds at once."""

    node_id = 2

    def handle(self, request):
        return messages.AppendEntriesResponse(
            term=request.term, success=True, match_index=request.prev_log_index + 1
        )

    def leader_disconnected(self, leader_id: int, term: int) -> None:
        pass


def serve_peer_port(port: int) -> None:
    from twisted.internet import reactor

    from jobsched.api.peer_port import PeerPortService
    from jobsched.net.access import AccessPolicy

    access = AccessPolicy({REQUEST.leader_id: None}, tls=False)
    PeerPortService(AnsweringAtOnce(), access, Wire(), reactor, "127.0.0.1", port).startService()
    print("serving", flush=True)
    reactor.run()


def peer_port_rounds(address: str, server_pid: int, count: int, rounds: int) -> None:
    """`rounds` measurements of `count` messages through raft/peer_links.py, on this
    process's reactor (which runs once, so after every other measurement)."""
    from twisted.internet import defer, task

    from jobsched.raft.peer_links import PeerLinks

    async def all_rounds(reactor) -> None:
        links = PeerLinks(reactor, Wire(), {2: "127.0.0.1"})
        links.learn_port(2, int(address.rpartition(":")[2]))
        await links.send(2, REQUEST, 5.0)  # connected
        for _ in range(rounds):
            before = Usage.now(server_pid)
            for _ in range(count):
                await links.send(2, REQUEST, 5.0)
            report("peer port message", count, before, server_pid)
        links.close()

    task.react(lambda reactor: defer.ensureDeferred(all_rounds(reactor)))


class Usage(NamedTuple):
    server_cpu: float
    client_cpu: float
    when: float

    @classmethod
    def now(cls, server_pid: int) -> Usage:
        return cls(cpu_seconds(server_pid)[0], time.process_time(), time.perf_counter())


def report(label: str, count: int, before: Usage, server_pid: int) -> None:
    after = Usage.now(server_pid)
    server_cpu = after.server_cpu - before.server_cpu
    client_cpu = after.client_cpu - before.client_cpu
    print(
        f"{label:<28} {count / (after.when - before.when):6.0f}/s   CPU per message: server "
        f"{1e6 * server_cpu / count:4.0f} µs, client {1e6 * client_cpu / count:4.0f} µs   "
        f"{machine_note()}",
        flush=True,
    )


def measure(label: str, send, server_pid: int, count: int) -> None:
    before = Usage.now(server_pid)
    send()
    report(label, count, before, server_pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the server alone")
    parser.add_argument("--serve-peer-port", type=int, metavar="PORT", help="the same, peer port")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.serve_peer_port:
        serve_peer_port(args.serve_peer_port)
        return
    if args.serve:
        register = partial(pb_grpc.add_RaftServiceServicer_to_server, AnsweringRaft())
        asyncio.run(serve_until_killed(args.serve, register))
        return
    count = args.messages
    with serving("bench.append_cost") as (address, server):
        for _ in range(args.rounds):
            measure("unary AppendEntries", lambda: unary_calls(address, count), server.pid, count)
            measure(
                "AppendEntriesStream message",
                lambda: asyncio.run(stream_messages(address, count)),
                server.pid,
                count,
            )
    with serving("bench.append_cost", "--serve-peer-port") as (address, server):
        peer_port_rounds(address, server.pid, count, args.rounds)


if __name__ == "__main__":
    main()
