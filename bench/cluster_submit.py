"""Committed SubmitJob throughput and latency on a local cluster.

For each concurrency level a fresh in-memory cluster (process executor) is started,
warmed up, and then `--jobs` SubmitJob calls are made by that many client threads,
spread over `--client-procs` client processes (synchronous gRPC stubs; a reply means
the job's entry is committed). The clients share the machine's cores with the nodes.

    .venv/bin/python -m bench.cluster_submit                       # 1, 8, 32, 64 clients
    .venv/bin/python -m bench.cluster_submit --quick --clients 32  # 1,000 jobs, a check
    .venv/bin/python -m bench.cluster_submit --command 'sleep 5'   # jobs hold their slots
    .venv/bin/python -m bench.cluster_submit --durable             # --data-dir per node
    .venv/bin/python -m bench.cluster_submit --clients 32 --tls both  # plaintext, then mTLS

With --durable, every node keeps its state in SQLite and the leader's storage commits
(one fsync each) per written log entry are reported from its /metrics. With `--tls on`
the cluster runs with mutual TLS (certificates made for the run) and the clients
present a client certificate; `--tls both` measures each level without TLS and then
with it, one after the other.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time

import grpc

from bench.common import (
    Submitter,
    client_tls,
    cpu_seconds,
    leader_address,
    machine_note,
    percentile,
    running_cluster,
    start_profilers,
    stop_profilers,
    total_cpu_seconds,
)
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.identity import TlsMaterial
from jobsched.net.channels import open_channel
from tests.nodeproc import metric_samples

WARMUP_JOBS = 200


def _client_process(
    address: str,
    tls: TlsMaterial | None,
    threads: int,
    first: int,
    count: int,
    prefix: str,
    command: str,
    ready,
    go,
    results,
) -> None:
    """Say `ready`, then submit jobs first..first+count-1 from `threads` threads once
    `go` is set; put (latencies, start, end, errors, CPU seconds used) on `results`."""
    next_job = iter(range(first, first + count))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        client = Submitter(address, tls)
        mine = []
        try:
            while True:
                with lock:
                    n = next(next_job, None)
                if n is None:
                    break
                request = pb.SubmitJobRequest(command=command, idempotency_key=f"{prefix}-{n}")
                started = time.perf_counter()
                try:
                    client.submit(request, time.monotonic() + 30)
                except grpc.RpcError as error:
                    errors.append(f"{error.code().name}: {error.details()}")
                    continue
                mine.append(time.perf_counter() - started)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    ready.put(os.getpid())
    go.wait()
    cpu, started = time.process_time(), time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put((latencies, started, time.perf_counter(), errors, time.process_time() - cpu))


def _warm_up(address: str, tls: TlsMaterial | None, prefix: str, command: str) -> None:
    client = Submitter(address, tls)
    try:
        for n in range(WARMUP_JOBS):
            client.submit(
                pb.SubmitJobRequest(command=command, idempotency_key=f"{prefix}-warm-{n}"),
                time.monotonic() + 30,
            )
    finally:
        client.close()


def _term(address: str, tls: TlsMaterial | None) -> int:
    with open_channel(address, tls) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        return stub.GetClusterStatus(pb.GetClusterStatusRequest(), timeout=10).current_term


def _completed(address: str, tls: TlsMaterial | None) -> int:
    """How many jobs have completed, as the leader sees it now."""
    with open_channel(address, tls) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        request = pb.ListJobsRequest(page_size=1, status_filter=pb.JOB_STATUS_COMPLETED)
        return stub.ListJobs(request, timeout=10).total_count


def _node_cpu(cluster) -> list[float]:
    """[leader's own, followers' own, jobs'] CPU seconds so far: a node's own includes
    its live children (its storage writer), jobs count once reaped."""
    leader = cluster.leader(timeout=10)
    leader_own, own, children = 0.0, 0.0, 0.0
    for node in cluster.nodes.values():
        pid = node.process.pid
        reaped = cpu_seconds(pid)[1]
        node_own = total_cpu_seconds([pid]) - reaped
        if node is leader:
            leader_own = node_own
        else:
            own += node_own
        children += reaped
    return [leader_own, own, children]


def _storage_counts(node) -> tuple:
    """(storage commits, log entries written) so far, from the node's /metrics."""
    samples = metric_samples(node.get("/metrics").body)
    return (
        int(samples.get("jobsched_storage_commits_total", 0)),
        int(samples.get("jobsched_storage_entries_written_total", 0)),
    )


def run_level(args, clients: int, tls: bool) -> dict:
    """One concurrency level on a fresh cluster (with mutual TLS or without); returns
    its figures."""
    procs = args.client_procs or (1 if clients <= 8 else 2)
    procs = min(procs, clients)
    context = multiprocessing.get_context("spawn")
    node_args = list(args.node_args)
    if args.durable:
        node_args += ["--data-dir", "{workdir}/data{node_id}"]
    with running_cluster(args.nodes, *node_args, keep_logs=args.keep_logs, tls=tls) as cluster:
        address, credentials = leader_address(cluster), client_tls(cluster)
        leader = next(n for n in cluster.nodes.values() if n.grpc_address == address)
        prefix = f"c{clients}"
        _warm_up(address, credentials, prefix, args.command)
        ready, go, results = context.Queue(), context.Event(), context.Queue()
        share, extra = divmod(args.jobs, procs)
        workers, first = [], 0
        for i in range(procs):
            count = share + (1 if i < extra else 0)
            threads = clients // procs + (1 if i < clients % procs else 0)
            workers.append(
                context.Process(
                    target=_client_process,
                    args=(
                        address,
                        credentials,
                        threads,
                        first,
                        count,
                        prefix,
                        args.command,
                        ready,
                        go,
                        results,
                    ),
                )
            )
            first += count
        for worker in workers:
            worker.start()
        for _ in workers:  # every client process has imported and is waiting
            ready.get(timeout=60)
        profilers = (
            start_profilers(
                args.py_spy,
                {
                    node.process.pid: (
                        "leader" if node.grpc_address == address else f"follower{node.node_id}"
                    )
                    + f"-{clients}c"
                    for node in cluster.nodes.values()
                },
            )
            if args.py_spy
            else []
        )
        note = machine_note()
        cpu_before, term_before = _node_cpu(cluster), _term(address, credentials)
        storage_before = _storage_counts(leader)
        go.set()
        outcomes = [results.get(timeout=600) for _ in workers]
        cpu = [
            after - before for after, before in zip(_node_cpu(cluster), cpu_before, strict=False)
        ]
        commits, entries = (
            after - before
            for after, before in zip(_storage_counts(leader), storage_before, strict=False)
        )
        stop_profilers(profilers)
        for worker in workers:
            worker.join(timeout=30)
        address = leader_address(cluster)
        completed = _completed(address, credentials)
        elections = _term(address, credentials) - term_before
    latencies = sorted(lat for outcome in outcomes for lat in outcome[0])
    errors = [error for outcome in outcomes for error in outcome[3]]
    elapsed = max(o[2] for o in outcomes) - min(o[1] for o in outcomes)
    return {
        "clients": clients,
        "tls": tls,
        "procs": procs,
        "ok": len(latencies),
        "errors": errors,
        "elapsed": elapsed,
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "max": latencies[-1] * 1000 if latencies else float("nan"),
        "completed": completed,
        "elections": elections,
        "note": note,
        "commits_per_entry": commits / entries if entries else float("nan"),
        "cpu_ms": [
            1000 * seconds / max(1, len(latencies))
            for seconds in [*cpu, sum(o[4] for o in outcomes)]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", default="1,8,32,64", help="comma-separated concurrency levels")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per level")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs per level")
    parser.add_argument(
        "--client-procs",
        type=int,
        default=0,
        help="client processes (default: 1 up to 8 clients, else 2)",
    )
    parser.add_argument("--command", default="echo hi", help="the job every submit carries")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="give every node a --data-dir (SQLite) in a temporary directory",
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        default="",
        help="record every node with py-spy (collapsed stacks) into DIR",
    )
    parser.add_argument(
        "--tls",
        choices=("off", "on", "both"),
        default="off",
        help="mutual TLS: off, on, or both (each level without TLS, then with it)",
    )
    parser.add_argument("node_args", nargs="*", help="extra node options, after --")
    args = parser.parse_args()
    if args.quick:
        args.jobs = 1000
    levels = [int(level) for level in args.clients.split(",")]
    storage = "durable (--data-dir)" if args.durable else "in memory"
    print(
        f"# {args.nodes} nodes, {storage}, process executor; job: {args.command!r}; "
        f"{args.jobs} jobs per level"
    )
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    print(
        f"{'clients':>7} {'tls':>4} {'procs':>5} {'ok':>6} {'err':>4} {'submits/s':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'done':>6} {'terms':>5} "
        f"{'fsync/entry':>11}  "
        f"CPU ms/submit: leader+followers+jobs+clients   when / load"
    )
    for clients, tls in ((clients, tls) for clients in levels for tls in modes):
        r = run_level(args, clients, tls)
        cpu = "+".join(f"{ms:.2f}" for ms in r["cpu_ms"])
        print(
            f"{r['clients']:>7} {'on' if r['tls'] else 'off':>4} {r['procs']:>5} "
            f"{r['ok']:>6} {len(r['errors']):>4} "
            f"{r['rate']:>9.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['max']:>7.1f} "
            f"{r['completed']:>6} {r['elections']:>5} {r['commits_per_entry']:>11.3f}  "
            f"{cpu} = {sum(r['cpu_ms']):.2f}   "
            f"{r['note']}",
            flush=True,
        )
        for error in sorted(set(r["errors"]))[:5]:
            print(f"    error: {error}")


if __name__ == "__main__":
    main()
