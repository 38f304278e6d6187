"""Unread StreamJobs streams against Raft and the write path (issue 8, item 4).

A 3-node in-memory cluster (process executor) gets `--preload` jobs, so that each
stream has more to send than its reader's windows take; then `--streams` StreamJobs
streams are opened on every node (spread over `--channels` connections per node) and
never read. While they stay open, `--clients` client threads submit for `--seconds`
and a prober asks each node in turn for a job's status (GetJobStatus) every 50 ms.

    .venv/bin/python -m bench.streams                       # 500 streams a node, 64 clients, 30 s
    .venv/bin/python -m bench.streams --streams 100 --seconds 10

Prints terms before and after, the streams each node holds open (from /metrics),
committed submits/s and the probe's p50/p99. Asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import threading
import time

import grpc

from bench.common import Submitter, leader_address, machine_note, percentile, running_cluster
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc

PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 30.0
PRELOAD_THREADS = 16


def _metrics(node) -> dict[str, float]:
    body = node.get("/metrics").body
    return {
        name: float(value) for name, value in (line.rsplit(" ", 1) for line in body.splitlines())
    }


def _terms(cluster) -> dict[int, int]:
    return {n: int(_metrics(node)["jobsched_raft_term"]) for n, node in cluster.nodes.items()}


def _submit_many(address: str, count: int, command: str, prefix: str, threads: int) -> list[str]:
    """Submit `count` jobs from `threads` threads; their ids."""
    numbers = iter(range(count))
    lock = threading.Lock()
    ids: list[str] = []

    def worker() -> None:
        client = Submitter(address)
        try:
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                request = pb.SubmitJobRequest(command=command, idempotency_key=f"{prefix}-{n}")
                job_id = client.submit(request, time.monotonic() + 60)
                with lock:
                    ids.append(job_id)
        finally:
            client.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return ids


def _client_process(address, threads, seconds, command, prefix, ready, go, results) -> None:
    """Submit from `threads` threads for `seconds` once `go` is set; put
    (committed, errors) on `results`."""
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()

    def worker(index: int) -> None:
        client = Submitter(address)
        deadline = time.monotonic() + seconds
        try:
            for n in itertools.count():
                if time.monotonic() >= deadline:
                    return
                request = pb.SubmitJobRequest(
                    command=command, idempotency_key=f"{prefix}-{index}-{n}"
                )
                try:
                    client.submit(request, deadline)
                    outcome = "ok"
                except grpc.RpcError:
                    outcome = "errors"
                with lock:
                    counts[outcome] += 1
        finally:
            client.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    ready.put(os.getpid())
    go.wait()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put((counts["ok"], counts["errors"]))


class UnreadStreams:
    """`per_node` StreamJobs calls on every node, never read, over `channels`
    connections of their own per node."""

    def __init__(self, cluster, per_node: int, channels: int) -> None:
        self._channels = []
        self.calls = []
        for node in cluster.nodes.values():
            own = [
                grpc.insecure_channel(node.grpc_address, [("grpc.use_local_subchannel_pool", 1)])
                for _ in range(channels)
            ]
            self._channels += own
            for n in range(per_node):
                stub = pb_grpc.SchedulerServiceStub(own[n % channels])
                self.calls.append(stub.StreamJobs(pb.StreamJobsRequest()))

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self._channels:
            channel.close()


class Prober(threading.Thread):
    """GetJobStatus of one job on each node in turn, every PROBE_INTERVAL seconds."""

    def __init__(self, cluster, job_id: str) -> None:
        super().__init__(daemon=True)
        self._channels = [grpc.insecure_channel(n.grpc_address) for n in cluster.nodes.values()]
        self._job_id = job_id
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        stubs = itertools.cycle(pb_grpc.SchedulerServiceStub(c) for c in self._channels)
        request = pb.GetJobStatusRequest(job_id=self._job_id)
        while not self.stop.wait(PROBE_INTERVAL):
            started = time.perf_counter()
            try:
                next(stubs).GetJobStatus(request, timeout=PROBE_TIMEOUT)
                self.latencies.append(time.perf_counter() - started)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
        for channel in self._channels:
            channel.close()


def run(args) -> None:
    with running_cluster(3, keep_logs=args.keep_logs) as cluster:
        address = leader_address(cluster)
        preload = _submit_many(address, args.preload, args.command, "preload", PRELOAD_THREADS)
        terms_before = _terms(cluster)
        note = machine_note()
        opened = time.monotonic()
        streams = UnreadStreams(cluster, args.streams, args.channels)
        try:
            held = {}
            deadline = time.monotonic() + 60
            for node_id, node in cluster.nodes.items():
                while time.monotonic() < deadline:
                    held[node_id] = _metrics(node).get("jobsched_grpc_streams_open", 0)
                    if held[node_id] >= args.streams:
                        break
                    time.sleep(0.2)
            settled = time.monotonic() - opened
            prober = Prober(cluster, preload[0])
            prober.start()
            context = multiprocessing.get_context("spawn")
            ready, go, results = context.Queue(), context.Event(), context.Queue()
            procs = [
                context.Process(
                    target=_client_process,
                    args=(
                        address,
                        args.clients // args.client_procs,
                        args.seconds,
                        args.command,
                        f"run{i}",
                        ready,
                        go,
                        results,
                    ),
                )
                for i in range(args.client_procs)
            ]
            for proc in procs:
                proc.start()
            for _ in procs:
                ready.get(timeout=60)
            started = time.monotonic()
            go.set()
            outcomes = [results.get(timeout=args.seconds + 120) for _ in procs]
            elapsed = time.monotonic() - started
            prober.stop.set()
            prober.join()
            for proc in procs:
                proc.join(timeout=30)
            after = {node_id: _metrics(node) for node_id, node in cluster.nodes.items()}
            terms_after = _terms(cluster)
        finally:
            streams.close()
    committed = sum(ok for ok, _errors in outcomes)
    errors = sum(errors for _ok, errors in outcomes)
    latencies = sorted(prober.latencies)
    print(f"# {note}")
    print(
        f"# 3 nodes in memory, process executor, job {args.command!r}; {args.preload} jobs "
        f"preloaded; {args.streams} unread StreamJobs streams per node over {args.channels} "
        f"connections each; {args.clients} submit clients for {args.seconds:g} s"
    )
    print(f"streams held open per node once opened: {held} (after {settled:.1f} s)")
    print(
        "streams open / writes waiting on a reader at the end: "
        + ", ".join(
            f"node {n}: {m.get('jobsched_grpc_streams_open', 0):.0f}"
            f"/{m.get('jobsched_grpc_stream_writes_waiting', 0):.0f}"
            for n, m in after.items()
        )
    )
    print(f"terms before: {terms_before}  after: {terms_after}")
    print(
        f"committed submits: {committed} in {elapsed:.1f} s = {committed / elapsed:.0f}/s, "
        f"errors {errors}"
    )
    print(
        f"GetJobStatus probe: n={len(latencies)}, p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max "
        f"{(latencies[-1] if latencies else float('nan')) * 1000:.1f} ms, "
        f"failures {len(prober.failures)}"
    )
    for failure in sorted(set(prober.failures))[:5]:
        print(f"    probe failure: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500, help="unread streams per node")
    parser.add_argument("--channels", type=int, default=5, help="connections per node for them")
    parser.add_argument("--clients", type=int, default=64, help="submit client threads")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--preload", type=int, default=3000, help="jobs submitted first")
    parser.add_argument("--command", default="true", help="the job every submit carries")
    parser.add_argument("--keep-logs", action="store_true")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
