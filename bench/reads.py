"""Memory and reads with a table of finished jobs.

    .venv/bin/python -m bench.reads                 # 10,000 `true` jobs, 3 nodes

A 3-node cluster (process executor) runs --jobs `true` jobs to completion (submitted
with SubmitJobs); each node's resident memory (VmRSS, /proc) is read before and after,
once a warm-up of 200 jobs has run, and again after the reads below (which fill the
caches of rendered jobs). Then, on the leader and on a follower, from one
client: ListJobs of a 100-job and of a 1,000-job page (client-side latency of the gRPC
call, --samples each) and the unpaged `GET /api/jobs` (every job, as JSON).
Every figure carries the load average. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import urllib.request

import grpc

from bench.common import machine_note, percentile, running_cluster
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from tests.nodeproc import Node

WARMUP_JOBS = 200


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def run_jobs(stub, count: int) -> None:
    """Submit `count` `true` jobs in batches of 1,000 and wait until all completed."""
    query = pb.ListJobsRequest(page_size=1, status_filter=pb.JOB_STATUS_COMPLETED)
    target = stub.ListJobs(query, timeout=10).total_count + count
    for first in range(0, count, 1000):
        size = min(1000, count - first)
        jobs = [pb.SubmitJobRequest(command="true")] * size
        stub.SubmitJobs(pb.SubmitJobsRequest(jobs=jobs), timeout=60)
    deadline = time.monotonic() + 900
    while stub.ListJobs(query, timeout=10).total_count < target:
        if time.monotonic() > deadline:
            raise AssertionError("the jobs did not finish in 900 s")
        time.sleep(0.2)


def list_latencies(stub, page_size: int, samples: int) -> list[float]:
    request = pb.ListJobsRequest(page_size=page_size)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        reply = stub.ListJobs(request, timeout=30)
        times.append(time.perf_counter() - started)
        assert len(reply.jobs) == page_size, len(reply.jobs)
    return sorted(times)


def get_all_latencies(node: Node, samples: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(samples):
        started = time.perf_counter()
        with urllib.request.urlopen(node.url + "/api/jobs", timeout=60) as response:
            size = len(response.read())
        times.append(time.perf_counter() - started)
    return sorted(times), size


def _ms(times: list[float]) -> str:
    return (
        f"p50 {percentile(times, 0.5) * 1000:7.2f} ms  p90 {percentile(times, 0.9) * 1000:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    with running_cluster(3, "--max-active-jobs", "1000000") as cluster:
        leader = cluster.leader(timeout=10)
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        with grpc.insecure_channel(leader.grpc_address) as channel:
            stub = pb_grpc.SchedulerServiceStub(channel)
            run_jobs(stub, WARMUP_JOBS)
            before = {node.node_id: rss_mb(node.process.pid) for node in cluster.nodes.values()}
            started = time.perf_counter()
            run_jobs(stub, args.jobs)
            took = time.perf_counter() - started
            time.sleep(2)  # let compaction and the last results settle
            after = {node.node_id: rss_mb(node.process.pid) for node in cluster.nodes.values()}
        print(f"# {args.jobs} `true` jobs ran in {took:.1f} s ({args.jobs / took:.0f}/s)")
        for node_id in sorted(before):
            role = "leader" if node_id == leader.node_id else "follower"
            print(
                f"node {node_id} ({role}): RSS {before[node_id]:.1f} → {after[node_id]:.1f} MB "
                f"= +{after[node_id] - before[node_id]:.1f} MB   {machine_note()}"
            )
        for node in (leader, follower):
            role = "leader" if node is leader else "follower"
            with grpc.insecure_channel(node.grpc_address) as channel:
                stub = pb_grpc.SchedulerServiceStub(channel)
                list_latencies(stub, 100, 5)  # warm up
                for size in (100, 1000):
                    times = list_latencies(stub, size, args.samples)
                    print(f"{role}: ListJobs page of {size:>4}: {_ms(times)}   {machine_note()}")
            times, size = get_all_latencies(node, max(5, args.samples // 10))
            print(
                f"{role}: GET /api/jobs (all {args.jobs + WARMUP_JOBS} jobs, {size / 1e6:.1f} MB): "
                f"{_ms(times)}   {machine_note()}"
            )
        for node_id, node in sorted(cluster.nodes.items()):
            grown = rss_mb(node.process.pid) - before[node_id]
            print(f"node {node_id}: RSS after the reads +{grown:.1f} MB over the warm node")


if __name__ == "__main__":
    main()
