"""The floor under SubmitJob here: a grpc.aio server that does nothing, driven by the
same closed-loop client as bench/compare.py.

    .venv/bin/python -m bench.grpc_floor                    # 1 and 32 clients
    .venv/bin/python -m bench.grpc_floor --hop              # each answer after a hop
    .venv/bin/python -m bench.grpc_floor --serve PORT       # the server alone

The server (a process of its own, one grpc.aio server on a uvloop loop, like a node's)
answers SchedulerService.SubmitJob with a fixed SubmitJobResponse: no Raft, no table.
With --hop, each answer is made on a reactor in the process's main thread and reached
through the node's ReactorBridge, as a node's handlers reach theirs (DESIGN.md: handlers
hop into the reactor). Whatever rate it reaches is the most a Python gRPC server (with
the hop: a node) can answer on this machine with this client; the CPU per call splits
into the server's and the client's. bench/compare.py measures the hopping server beside
etcd (`--modes floor`). Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import partial

import uvloop

from bench.common import cpu_seconds, machine_note, serve_until_killed, serving
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.net.bridge import ReactorBridge
from jobsched.net.loop import EventLoopThread

ANSWER = pb.SubmitJobResponse(job_id="0" * 36, created_at_ms=1)


class NoOpScheduler(pb_grpc.SchedulerServiceServicer):
    async def SubmitJob(self, request, context):
        return ANSWER


class HoppingScheduler(pb_grpc.SchedulerServiceServicer):
    """Answers on the reactor's thread, through the bridge a node's handlers use."""

    def __init__(self, bridge: ReactorBridge) -> None:
        self._bridge = bridge

    async def SubmitJob(self, request, context):
        return await self._bridge.call(lambda: ANSWER)


def serve_hopping(port: int) -> None:
    """The hopping server: gRPC on a loop thread, the reactor in this thread."""
    from twisted.internet import reactor

    servicer = HoppingScheduler(ReactorBridge(reactor))
    register = partial(pb_grpc.add_SchedulerServiceServicer_to_server, servicer)
    loop = EventLoopThread("grpc-server")
    loop.start()
    loop.submit(serve_until_killed(port, register))
    reactor.run(installSignalHandlers=False)


def measure(address: str, server_pid: int, clients: int, seconds: float) -> dict:
    client = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.closed_loop", "--system", "jobsched"),
            *("--address", address, "--clients", str(clients), "--seconds", str(seconds)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("the client did not start")
        before = cpu_seconds(server_pid)[0]
        client.stdin.write("go\n")
        client.stdin.flush()
        result = json.loads(client.stdout.readline())
        result["server_cpu"] = cpu_seconds(server_pid)[0] - before
    finally:
        client.wait(timeout=60)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the server alone")
    parser.add_argument("--serve-hopping", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--hop", action="store_true", help="answer after a hop to a reactor")
    parser.add_argument("--clients", default="1,32", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.serve:
        register = partial(pb_grpc.add_SchedulerServiceServicer_to_server, NoOpScheduler())
        uvloop.run(serve_until_killed(args.serve, register))
        return
    if args.serve_hopping:
        serve_hopping(args.serve_hopping)
        return
    kind = "after a hop" if args.hop else "at once"
    with serving("bench.grpc_floor", "--serve-hopping" if args.hop else "--serve") as (
        address,
        server,
    ):
        for clients in (int(level) for level in args.clients.split(",")):
            result = measure(address, server.pid, clients, args.seconds)
            calls = max(1, result["calls"])
            print(
                f"no-op grpc.aio SubmitJob {kind}, {clients:2d} clients:"
                f" {result['rate']:7.0f} calls/s"
                f"  p50 {result['p50']:5.2f} ms  p99 {result['p99']:5.2f} ms"
                f"  CPU per call: server {1000 * result['server_cpu'] / calls:.3f} ms,"
                f" client {1000 * result['client_cpu'] / calls:.3f} ms   {machine_note()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
