"""What one AppendEntries costs each end: a unary call against a message on an open
stream, between two processes that do nothing else.

    .venv/bin/python -m bench.append_cost [--messages N] [--rounds R]

The server (a process of its own, one grpc.aio server on its loop, like a node's)
answers RaftService.AppendEntries and AppendEntriesStream at once. The client sends
`--messages` requests one at a time, as a leader does to one follower: unary calls as
the transport made them before streams (`.future()` on a synchronous channel) and
messages on one AppendEntriesStream (grpc.aio, as raft/append_streams.py sends them).
Prints the rate and each end's CPU per message; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from functools import partial

import grpc

from bench.common import cpu_seconds, machine_note, serve_until_killed, serving
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc

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


def measure(label: str, send, server_pid: int, count: int) -> None:
    server_before = cpu_seconds(server_pid)[0]
    client_before = time.process_time()
    started = time.perf_counter()
    send()
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    server_cpu = cpu_seconds(server_pid)[0] - server_before
    print(
        f"{label:<28} {count / elapsed:6.0f}/s   CPU per message: server "
        f"{1e6 * server_cpu / count:4.0f} µs, client {1e6 * client_cpu / count:4.0f} µs   "
        f"{machine_note()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the server alone")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
