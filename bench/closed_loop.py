"""The closed-loop write client of bench/compare.py: N workers on one grpc.aio channel.

Each worker sends one write, waits for its answer, and sends the next. The same code
drives etcd (KV.Put) and jobsched (SubmitJob, or SubmitJobs of --batch jobs); a reply
means the write is committed in both. Run by bench/compare.py as a process of its own:

    python -m bench.closed_loop --system jobsched --address 127.0.0.1:50051 --clients 8

It warms up for --warmup seconds, prints `ready`, waits for a line on stdin, measures
for --seconds and prints one JSON line: writes (jobs for a batch), calls, errors, the
measured time, latency percentiles (ms, per call) and the client's own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import grpc

from bench.common import percentile


class ClientProcess:
    """This client as a process of its own, started with `options` (as on its command
    line) and warmed up; `measure()` sets it going and returns its JSON figures.
    Closing it waits (60 s at most) for it to end, then kills it."""

    def __init__(self, *options: str) -> None:
        command = [sys.executable, "-m", "bench.closed_loop", *options]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if self._process.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the closed-loop client did not start: {command}")

    def measure(self) -> dict:
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _etcd_call(channel, stub_dir: str):
    from bench.etcd import import_stubs

    pb, pb_grpc = import_stubs(stub_dir)
    put = pb_grpc.KVStub(channel).Put
    value = b"v" * 64

    async def call(worker: int, n: int) -> int:
        await put(pb.PutRequest(key=f"bench/{worker}/{n}".encode(), value=value), timeout=10)
        return 1

    return call


def _jobsched_call(channel, command: str, batch: int):
    from jobsched._proto import scheduler_pb2 as pb
    from jobsched._proto import scheduler_pb2_grpc as pb_grpc

    stub = pb_grpc.SchedulerServiceStub(channel)
    if batch:
        jobs = pb.SubmitJobsRequest(jobs=[pb.SubmitJobRequest(command=command)] * batch)

        async def call_batch(worker: int, n: int) -> int:
            return len((await stub.SubmitJobs(jobs, timeout=10)).jobs)

        return call_batch
    request = pb.SubmitJobRequest(command=command)

    async def call(worker: int, n: int) -> int:
        await stub.SubmitJob(request, timeout=10)
        return 1

    return call


async def _run(args) -> dict:
    channel = grpc.aio.insecure_channel(args.address)
    if args.system == "etcd":
        call = _etcd_call(channel, args.stubs)
    else:
        call = _jobsched_call(channel, args.command, args.batch)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"writes": 0, "calls": 0}
    phase = {"measuring": False, "stop": False}

    async def worker(i: int) -> None:
        n = 0
        while not phase["stop"]:
            n += 1
            started = time.perf_counter()
            try:
                done = await call(i, n)
            except grpc.aio.AioRpcError as error:
                key = f"{error.code().name}: {error.details()}"
                errors[key] = errors.get(key, 0) + 1
                await asyncio.sleep(0.01)
                continue
            if phase["measuring"]:
                latencies.append(time.perf_counter() - started)
                counts["writes"] += done
                counts["calls"] += 1

    workers = [asyncio.create_task(worker(i)) for i in range(args.clients)]
    await asyncio.sleep(args.warmup)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    errors.clear()
    cpu, started = time.process_time(), time.perf_counter()
    phase["measuring"] = True
    await asyncio.sleep(args.seconds)
    phase["measuring"] = False
    elapsed = time.perf_counter() - started
    phase["stop"] = True
    await asyncio.gather(*workers, return_exceptions=True)
    cpu = time.process_time() - cpu
    await channel.close()
    latencies.sort()
    return {
        "writes": counts["writes"],
        "calls": counts["calls"],
        "elapsed": elapsed,
        "rate": counts["writes"] / elapsed,
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "errors": errors,
        "client_cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=("etcd", "jobsched"), required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stubs", default="", help="etcd's generated stubs (bench/etcd.py)")
    parser.add_argument("--command", default="true")
    parser.add_argument("--batch", type=int, default=0, help="SubmitJobs of this many jobs")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))), flush=True)


if __name__ == "__main__":
    main()
