"""The floor under SubmitJob here: a grpc.aio server that does nothing, driven by the
same closed-loop client as bench/compare.py.

    .venv/bin/python -m bench.grpc_floor                    # 1 and 32 clients
    .venv/bin/python -m bench.grpc_floor --serve PORT       # the server alone

The server (a process of its own, one grpc.aio server on its loop, like a node's)
answers SchedulerService.SubmitJob at once with a fixed SubmitJobResponse: no Raft,
no table, no reactor. Whatever rate it reaches is the most a Python gRPC server can
answer on this machine with this client; the CPU per call splits into the server's and
the client's. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from functools import partial

from bench.common import cpu_seconds, machine_note, serve_until_killed, serving
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc


class NoOpScheduler(pb_grpc.SchedulerServiceServicer):
    async def SubmitJob(self, request, context):
        return pb.SubmitJobResponse(job_id="0" * 36, created_at_ms=1)


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
    parser.add_argument("--clients", default="1,32", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.serve:
        register = partial(pb_grpc.add_SchedulerServiceServicer_to_server, NoOpScheduler())
        asyncio.run(serve_until_killed(args.serve, register))
        return
    with serving("bench.grpc_floor") as (address, server):
        for clients in (int(level) for level in args.clients.split(",")):
            result = measure(address, server.pid, clients, args.seconds)
            calls = max(1, result["calls"])
            print(
                f"no-op grpc.aio SubmitJob, {clients:2d} clients: {result['rate']:7.0f} calls/s"
                f"  p50 {result['p50']:5.2f} ms  p99 {result['p99']:5.2f} ms"
                f"  CPU per call: server {1000 * result['server_cpu'] / calls:.3f} ms,"
                f" client {1000 * result['client_cpu'] / calls:.3f} ms   {machine_note()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
